"""Split knowledge documents into chunks that fit the teacher's context, on paragraph boundaries."""

import re

CHARS_PER_TOKEN = 4  # a safe average for English text with BPE tokenisers


def _pieces(paragraph: str, limit: int) -> list[str]:
    """A paragraph longer than a chunk, cut at sentence ends, else at spaces, never inside a word if avoidable."""
    pieces = []
    while len(paragraph) > limit:
        cut = paragraph.rfind(". ", 0, limit)
        if cut > limit // 2:
            cut += 1
        else:
            cut = paragraph.rfind(" ", 0, limit)
            if cut <= 0:
                cut = limit
        pieces.append(paragraph[:cut].strip())
        paragraph = paragraph[cut:].strip()
    if paragraph:
        pieces.append(paragraph)
    return pieces


def _tail(text: str, size: int) -> str:
    """The last `size` characters of a chunk, starting at a word."""
    if size <= 0 or len(text) <= size:
        return ""
    tail = text[-size:]
    start = tail.find(" ")
    return tail[start + 1 :].strip() if start >= 0 else ""


def chunk_document(text: str, *, max_tokens: int = 1000, overlap_tokens: int = 100) -> list[str]:
    """Chunks of at most `max_tokens` (estimated), each starting with the end of the one before as context."""
    limit = max(200, max_tokens * CHARS_PER_TOKEN)
    overlap = min(max(0, overlap_tokens * CHARS_PER_TOKEN), limit // 4)
    pieces = [piece for p in re.split(r"\n\s*\n", text) if p.strip() for piece in _pieces(p.strip(), limit)]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > limit:
            chunks.append(current)
            tail = _tail(current, overlap)
            current = f"{tail}\n\n{piece}" if tail and len(tail) + 2 + len(piece) <= limit else piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks
