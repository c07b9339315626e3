"""Write qna data as InstructLab writes it: familiar key order, multi-line text as literal blocks."""

import yaml

TOP_ORDER = ("version", "task_description", "domain", "created_by", "document_outline", "seed_examples", "document")
SEED_ORDER = ("context", "question", "answer", "questions_and_answers")
QA_ORDER = ("question", "answer")
DOCUMENT_ORDER = ("repo", "commit", "patterns")


class _Dumper(yaml.SafeDumper):
    # Indent lists under their key, as InstructLab's own files and yamllint's default style do.
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # The emitter falls back to a quoted style by itself where a literal block cannot hold the text exactly.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _ordered(mapping: dict, order: tuple[str, ...]) -> dict:
    known = {key: mapping[key] for key in order if key in mapping}
    known.update((key, value) for key, value in mapping.items() if key not in known)
    return known


def canonical(data: dict) -> dict:
    out = _ordered(data, TOP_ORDER)
    if isinstance(out.get("seed_examples"), list):
        seeds = []
        for seed in out["seed_examples"]:
            if isinstance(seed, dict):
                seed = _ordered(seed, SEED_ORDER)
                if isinstance(seed.get("questions_and_answers"), list):
                    seed["questions_and_answers"] = [
                        _ordered(qa, QA_ORDER) if isinstance(qa, dict) else qa for qa in seed["questions_and_answers"]
                    ]
            seeds.append(seed)
        out["seed_examples"] = seeds
    if isinstance(out.get("document"), dict):
        out["document"] = _ordered(out["document"], DOCUMENT_ORDER)
    return out


def dump_qna(data: dict) -> str:
    return yaml.dump(canonical(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 30, indent=2)
