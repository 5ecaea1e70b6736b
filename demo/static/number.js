"use strict";
// Draw-a-number pad: the digit pad's way of drawing (app.js) on a canvas three times as wide; the
// drawing goes to this page's server (/api/number), and each digit read gets its box drawn over it.

(() => {
  const pad = document.getElementById("number-pad");
  const pen = pad.getContext("2d");
  const overlay = document.getElementById("number-boxes").getContext("2d");
  const numberOut = document.getElementById("number");
  const confidenceOut = document.getElementById("number-confidence");
  const statusOut = document.getElementById("number-status");
  const digitsOut = document.getElementById("number-digits");

  const STROKE_WIDTH = pad.height / 12; // as thick, for the line's height, as the digit pad's strokes
  const DEBOUNCE_MS = 250;

  let drawing = false;
  let inked = false;
  let last = null;
  let timer = null;
  let sequence = 0; // only the newest request may update the page

  function blank() {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, pad.width, pad.height);
    pen.strokeStyle = "#fff";
    pen.lineWidth = STROKE_WIDTH;
    pen.lineCap = "round";
    pen.lineJoin = "round";
    overlay.clearRect(0, 0, pad.width, pad.height);
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
  }

  function strokeTo(p) {
    pen.beginPath();
    pen.moveTo(last.x, last.y);
    pen.lineTo(p.x, p.y);
    pen.stroke();
    last = p;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(readDrawing, DEBOUNCE_MS);
  }

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.focus({ preventScroll: true });
    pad.setPointerCapture(event.pointerId);
    drawing = true;
    inked = true;
    clearTimeout(timer);
    last = point(event);
    strokeTo({ x: last.x + 0.01, y: last.y });
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) strokeTo(point(e));
  });
  for (const type of ["pointerup", "pointercancel"]) {
    pad.addEventListener(type, () => {
      if (!drawing) return;
      drawing = false;
      schedule(); // a number takes several strokes: read it once the pen rests
    });
  }
  pad.addEventListener("keydown", (event) => {
    if (event.key === "Delete" || event.key === "Backspace" || event.key === "Escape") {
      event.preventDefault();
      clear();
    }
  });
  document.getElementById("number-clear").addEventListener("click", clear);

  function clear() {
    clearTimeout(timer);
    sequence++;
    blank();
    inked = false;
    numberOut.textContent = "-";
    confidenceOut.textContent = "";
    statusOut.textContent = "";
    digitsOut.replaceChildren();
  }

  function readDrawing() {
    if (!inked) return;
    pad.toBlob((blob) => ask(blob), "image/png");
  }

  async function ask(body) {
    const mine = ++sequence;
    try {
      const response = await fetch("/api/number", { method: "POST", headers: { "Content-Type": "image/png" }, body });
      const answer = await response.json();
      if (mine !== sequence) return;
      if (!response.ok) {
        show(null);
        statusOut.textContent = answer.error || `error ${response.status}`;
        return;
      }
      statusOut.textContent = "";
      show(answer);
    } catch (error) {
      if (mine === sequence) {
        show(null);
        statusOut.textContent = "the demo server did not answer";
      }
    }
  }

  function show(answer) {
    overlay.clearRect(0, 0, pad.width, pad.height);
    digitsOut.replaceChildren();
    numberOut.textContent = answer ? answer.number : "?";
    confidenceOut.textContent = answer ? `${Math.round(answer.confidence * 100)}% sure of every digit` : "";
    if (!answer) return;
    overlay.lineWidth = 3;
    overlay.font = "bold 28px system-ui, sans-serif";
    answer.digits.forEach(({ digit, confidence, box: [x, y, w, h] }) => {
      overlay.strokeStyle = overlay.fillStyle = confidence >= 0.6 ? "#4dabf7" : "#ffa94d"; // unsure: orange
      overlay.strokeRect(x, y, w, h);
      overlay.fillText(String(digit), x, Math.max(28, y - 6));
      const item = document.createElement("li");
      item.textContent = `${digit}: ${Math.round(confidence * 100)}%`;
      item.setAttribute("aria-label", `${digit}, ${Math.round(confidence * 100)} percent, at x ${x}, y ${y}, ${w} by ${h}`);
      item.dataset.box = [x, y, w, h].join(",");
      digitsOut.appendChild(item);
    });
  }

  blank();
})();
