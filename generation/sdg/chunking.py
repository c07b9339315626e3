"""Split knowledge documents into chunks that fit the teacher's context, on paragraph boundaries."""

import re

CHARS_PER_TOKEN = 4  # a safe average for English text with BPE tokenisers


def chunk_document(text: str, *, max_tokens: int = 1000, overlap_tokens: int = 100) -> list[str]:
    limit = max(200, max_tokens * CHARS_PER_TOKEN)
    overlap = max(0, overlap_tokens * CHARS_PER_TOKEN)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    current = ""
    for paragraph in paragraphs:
        while len(paragraph) > limit:  # one paragraph longer than a chunk: cut it at a sentence end
            cut = paragraph.rfind(". ", 0, limit)
            cut = cut + 1 if cut > limit // 2 else limit
            pieces = paragraph[:cut].strip()
            if current:
                chunks.append(current)
                current = ""
            chunks.append(pieces)
            paragraph = paragraph[cut:].strip()
        if current and len(current) + 2 + len(paragraph) > limit:
            chunks.append(current)
            tail = current[-overlap:] if overlap else ""
            current = (tail[tail.find(" ") + 1 :] + "\n\n" if tail else "") + paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks
