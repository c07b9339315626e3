"""The InstructLab taxonomy format: reading, validating and writing `qna.yaml` trees. Imports no Django."""

from curation.taxonomy.problems import Problem
from curation.taxonomy.qna import KINDS, QnaFile, content_hash, leaf_kind, read_qna, validate_qna
from curation.taxonomy.roundtrip import export_qna
from curation.taxonomy.serialize import dump_qna

__all__ = [
    "KINDS",
    "Problem",
    "QnaFile",
    "content_hash",
    "dump_qna",
    "export_qna",
    "leaf_kind",
    "read_qna",
    "validate_qna",
]
