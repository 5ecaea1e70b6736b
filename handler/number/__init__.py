"""The number model: a line of 1 to 12 digits read with the digit model's network, touching ones with
a line reader of their own (docs/numbers.md).

    lines.py       uploads -> lines of light ink on black (the digit model's decoding and cleaning)
    components.py  ink -> its connected components, a batch's lines in one pass
    segments.py    components -> atoms (specks and rules dropped, broken digits grouped, wide groups
                   cut) -> candidate segments
    path.py        the best path through the candidates: which are the digits
    line_reader.py lines whose digits touch, read whole by the line reader (model/line_network.py)
    reader.py      a batch of requests -> per image its Reading (one forward pass for all candidates)
    confidence.py  a reading -> the probability that the whole number is right
    answers.py     readings -> answers in each protocol

handler/number_handler.py is the archive's entry point.
"""
