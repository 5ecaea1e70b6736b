"use strict";
// Draw-a-digit page: pointer events draw on the canvas; the drawing (or an uploaded photo) is
// posted to this page's server, which adds the key and asks TorchServe. "Explain" asks for an
// explanation instead and shows the 28 x 28 view the network read, its attributions overlaid.

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const digitOut = document.getElementById("digit");
const confidenceOut = document.getElementById("confidence");
const statusOut = document.getElementById("status");
const bars = document.getElementById("bars");
const upload = document.getElementById("upload");
const preview = document.getElementById("preview");
const explainButton = document.getElementById("explain");
const explanation = document.getElementById("explanation");
const heatmap = document.getElementById("heatmap");

// MNIST digits are about 2-3 px strokes in 28 px: a tenth of the canvas, scaled.
const STROKE_WIDTH = pad.width / 12;
// Ask while the person draws, but at most once per pause this long.
const DEBOUNCE_MS = 150;
// What the service's 422 reasons mean to the person drawing (docs/api.md).
const REASONS = {
  no_digit: "No digit found: the image is blank.",
  not_a_digit: "That does not look like a digit.",
  several_digits: "Several digits: this pad reads one digit per image. Draw one digit, or use the number pad below.",
};

let drawing = false;
let inked = false;
let last = null;
let timer = null;
let sequence = 0; // only the newest request may update the page
let uploaded = null; // the photo on show, if the input is a photo rather than the drawing

// Attribution colours: for the answered digit, against it.
const FOR = [255, 64, 32];
const AGAINST = [32, 144, 255];

function blank() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
  pen.strokeStyle = "#fff";
  pen.lineWidth = STROKE_WIDTH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}

function buildBars() {
  for (let d = 0; d < 10; d++) {
    const item = document.createElement("li");
    item.innerHTML = `<span class="name">${d}</span><span class="track"><span class="bar"></span></span><span class="value">-</span>`;
    item.setAttribute("aria-label", `${d}: no prediction yet`);
    bars.appendChild(item);
  }
}

function point(event) {
  // The canvas is drawn at 280 x 280 but shown at whatever size the layout gives it.
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
  timer = setTimeout(predictDrawing, DEBOUNCE_MS);
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault(); // no text selection or scrolling; but keep Escape/Delete working here:
  pad.focus({ preventScroll: true });
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  inked = true;
  uploaded = null;
  preview.hidden = true;
  explanation.hidden = true; // stale once the drawing changes
  last = point(event);
  strokeTo({ x: last.x + 0.01, y: last.y }); // a dot for a tap
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) strokeTo(point(e));
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    clearTimeout(timer);
    predictDrawing();
  });
}
pad.addEventListener("keydown", (event) => {
  if (event.key === "Delete" || event.key === "Backspace" || event.key === "Escape") {
    event.preventDefault();
    clear();
  }
});
document.getElementById("clear").addEventListener("click", clear);
explainButton.addEventListener("click", explain);

upload.addEventListener("change", () => {
  const file = upload.files[0];
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  blank();
  inked = false;
  uploaded = file;
  explanation.hidden = true;
  ask(file, file.type || "application/octet-stream");
  upload.value = ""; // the same file may be chosen again
});

function clear() {
  clearTimeout(timer);
  sequence++;
  blank();
  inked = false;
  uploaded = null;
  preview.hidden = true;
  explanation.hidden = true;
  explainButton.disabled = true;
  digitOut.textContent = "-";
  confidenceOut.textContent = "Draw something to begin.";
  statusOut.textContent = "";
  delete statusOut.dataset.reason;
  showProbabilities(null);
}

function predictDrawing() {
  if (!inked) return;
  pad.toBlob((blob) => ask(blob, "image/png"), "image/png");
}

function explain() {
  if (uploaded) ask(uploaded, uploaded.type || "application/octet-stream", "/api/explain");
  else if (inked) pad.toBlob((blob) => ask(blob, "image/png", "/api/explain"), "image/png");
}

async function ask(body, type, endpoint = "/api/predict") {
  const mine = ++sequence;
  try {
    const response = await fetch(endpoint, { method: "POST", headers: { "Content-Type": type }, body });
    const answer = await response.json();
    if (mine !== sequence) return;
    if (!response.ok) {
      showError(REASONS[answer.reason] || answer.error || `error ${response.status}`, answer.reason);
      return;
    }
    statusOut.textContent = "";
    delete statusOut.dataset.reason;
    digitOut.textContent = String(answer.digit);
    confidenceOut.textContent = `${Math.round(answer.confidence * 100)}% sure`;
    showProbabilities(answer.probabilities);
    explainButton.disabled = false;
    if (answer.view) showExplanation(answer);
  } catch (error) {
    if (mine === sequence) showError("the demo server did not answer");
  }
}

function showExplanation(answer) {
  // Each pixel: the view's grey, dimmed so that colour reads on it, blended toward FOR or AGAINST
  // by its attribution's share of the largest one.
  const largest = Math.max(1e-9, ...answer.attributions.flat().map(Math.abs));
  const image = heatmap.getContext("2d").createImageData(28, 28);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const grey = 160 * answer.view[y][x];
      const share = answer.attributions[y][x] / largest;
      const colour = share > 0 ? FOR : AGAINST;
      const alpha = Math.min(1, Math.abs(share) * 1.5);
      const at = (y * 28 + x) * 4;
      for (let c = 0; c < 3; c++) image.data[at + c] = Math.round(grey * (1 - alpha) + colour[c] * alpha);
      image.data[at + 3] = 255;
    }
  }
  heatmap.getContext("2d").putImageData(image, 0, 0);
  const digit = answer.digit;
  heatmap.setAttribute(
    "aria-label",
    `The 28 by 28 pixel image the network read, in grey; in orange the pixels that made it answer ${digit}, in blue those against it.`,
  );
  explanation.querySelector(".explained-digit").textContent = String(digit);
  explanation.hidden = false;
}

function showError(message, reason) {
  explanation.hidden = true;
  explainButton.disabled = true;
  digitOut.textContent = "?";
  confidenceOut.textContent = "";
  statusOut.textContent = message;
  if (reason) statusOut.dataset.reason = reason;
  else delete statusOut.dataset.reason;
  showProbabilities(null);
}

function showProbabilities(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.querySelectorAll("li").forEach((item, d) => {
    const p = probabilities ? probabilities[d] : 0;
    item.classList.toggle("top", d === top);
    item.querySelector(".bar").style.width = `${(p * 100).toFixed(1)}%`;
    item.querySelector(".value").textContent = probabilities ? `${(p * 100).toFixed(1)}%` : "-";
    item.setAttribute("aria-label", probabilities ? `${d}: ${(p * 100).toFixed(1)} percent` : `${d}: no prediction yet`);
  });
}

blank();
buildBars();
// The caption's swatches in the overlay's colours (set here: the page allows no inline styles).
document.getElementById("swatch-for").style.background = `rgb(${FOR})`;
document.getElementById("swatch-against").style.background = `rgb(${AGAINST})`;
