"""Recipes and mixes as InstructLab writes them: exact counts for a seed, stable bytes, replay past 100%."""

import json

import pytest
import yaml

from labweb.errors import LabError
from training.trainer.mixing import Recipe, Source, choose, held_out, mix, sample_count


def jsonl(path, leaf: str, count: int) -> str:
    with open(path, "w") as handle:
        for n in range(count):
            record = {
                "messages": [{"role": "user", "content": f"{leaf} q{n}"}, {"role": "assistant", "content": f"a{n}"}],
                "metadata": {"leaf": leaf},
            }
            handle.write(json.dumps(record) + "\n")
    return str(path)


def test_a_recipe_reads_and_writes_instructlabs_yaml():
    text = "datasets:\n- path: knowledge.jsonl\n  sampling_size: 1.0\n- path: replay.jsonl\n  sampling_size: 200\n"
    text += "metadata:\n  sys_prompt: I am a helpful assistant.\n"
    recipe = Recipe.from_yaml(text)
    assert recipe.sources == (Source("knowledge.jsonl", 1.0), Source("replay.jsonl", 200))
    assert recipe.sys_prompt == "I am a helpful assistant."
    assert yaml.safe_load(recipe.to_yaml()) == yaml.safe_load(text)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("datasets: [", None, 1),
        ("datasets: []\n", "datasets", None),
        ("datasets:\n- sampling_size: 1.0\n", "datasets[0].path", None),
        ("datasets:\n- path: a.jsonl\n  sampling_size: -2\n", "datasets[0].sampling_size", None),
        ("datasets:\n- path: a.jsonl\n  sampling_size: lots\n", "datasets[0].sampling_size", None),
    ],
)
def test_a_bad_recipe_names_the_field_or_line(text, field, line):
    with pytest.raises(LabError) as error:
        Recipe.from_yaml(text, path="phase2.yaml")
    assert (error.value.field, error.value.path) == (field, "phase2.yaml")
    if line:
        assert error.value.line == line


def test_a_float_is_a_fraction_and_an_integer_a_count_repeating_past_the_whole():
    assert sample_count(0.25, 100) == 25 and sample_count(30, 100) == 30 and sample_count(1.0, 7) == 7
    # As instructlab-sdg counts: a fraction rounds down, and 1 (an integer) is the whole source as 1.0 is.
    assert sample_count(0.5, 15) == 7 and sample_count(0.29, 100) == 28 and sample_count(1, 7) == 7
    upsampled = choose(10, 25, seed=3)
    assert len(upsampled) == 25 and all((upsampled == i).sum() in (2, 3) for i in range(10))
    assert list(choose(10, 4, seed=3)) == list(choose(10, 4, seed=3))
    assert list(choose(10, 4, seed=3)) != list(choose(10, 4, seed=4))


def test_a_mix_has_exact_counts_per_source_and_leaf_and_the_same_bytes_for_the_same_seed(tmp_path):
    knowledge = jsonl(tmp_path / "k.jsonl", "knowledge/moons", 40)
    replay = jsonl(tmp_path / "r.jsonl", "community", 30)
    recipe = Recipe((Source(knowledge, 1.0), Source(replay, 0.5), Source(knowledge, 10)))
    leaf = lambda record: record["metadata"]["leaf"]  # noqa: E731
    first = mix(recipe, tmp_path / "a.jsonl", seed=11, leaf_of=leaf)
    assert first.samples == 40 + 15 + 10
    assert first.per_source == {knowledge: 50, replay: 15}
    assert first.per_leaf == {"knowledge/moons": 50, "community": 15}
    again = mix(recipe, tmp_path / "b.jsonl", seed=11, leaf_of=leaf)
    assert again.sha256 == first.sha256 and (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert mix(recipe, tmp_path / "c.jsonl", seed=12).sha256 != first.sha256
    assert not list(tmp_path.glob("*.partial"))


def test_a_missing_source_is_named_and_leaves_no_file(tmp_path):
    with pytest.raises(LabError) as error:
        mix(Recipe((Source(str(tmp_path / "gone.jsonl")),)), tmp_path / "out.jsonl", seed=1)
    assert error.value.field == "datasets[0].path"
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob("*.partial"))


def test_the_held_out_split_is_per_leaf_seeded_and_stable_when_samples_are_added():
    leaves = {"a": list(range(100)), "b": list(range(100, 110)), "c": [200]}
    out = held_out(leaves, 0.1, seed=5)
    assert len(out & set(leaves["a"])) == 10 and len(out & set(leaves["b"])) == 1 and 200 not in out
    assert held_out(leaves, 0.1, seed=5) == out and held_out(leaves, 0.1, seed=6) != out
    grown = held_out({**leaves, "a": list(range(100)) + list(range(1000, 1010))}, 0.1, seed=5)
    assert len(grown & out & set(range(100))) >= 9  # the earlier held-out samples mostly stay out


def approved(n: int, leaf: str, kind: str, *, words: int = 5, start: int = 0):
    from training.trainer.mixing import ApprovedSample

    return [
        ApprovedSample(id=start + i, leaf=leaf, kind=kind, question=f"q{i}", response=" ".join(["w"] * words))
        for i in range(n)
    ]


def test_a_phased_build_splits_knowledge_by_length_keeps_skills_apart_and_holds_samples_out(tmp_path):
    from training.trainer.mixing import build_files, phase_recipes

    leaves = [
        (
            "knowledge/moons",
            approved(10, "knowledge/moons", "knowledge", words=5)
            + approved(10, "knowledge/moons", "knowledge", words=200, start=100),
        ),
        ("compositional_skills/haiku", approved(30, "compositional_skills/haiku", "skills", start=1000)),
    ]
    files = build_files(
        leaves,
        tmp_path,
        plan="phased",
        seed=4,
        held_out_fraction=0.1,
        complex_above_words=50,
        system_prompt="You are helpful.",
    )
    counts = {role: w.samples for role, w in files.items()}
    assert (counts["skills"], counts["held_out"]) == (27, 5)
    assert counts["knowledge_simple"] <= 10 and counts["knowledge_complex"] <= 10
    assert files["knowledge_simple"].samples + files["knowledge_complex"].samples == 18
    assert files["held_out"].per_leaf == {"knowledge/moons": 2, "compositional_skills/haiku": 3}
    first = json.loads((tmp_path / "knowledge_simple.jsonl").read_text().splitlines()[0])
    assert first["unmask"] is True and [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert json.loads((tmp_path / "skills.jsonl").read_text().splitlines()[0])["unmask"] is False
    again = build_files(
        leaves,
        tmp_path / "again",
        plan="phased",
        seed=4,
        held_out_fraction=0.1,
        complex_above_words=50,
        system_prompt="You are helpful.",
    )
    assert {r: w.sha256 for r, w in again.items()} == {r: w.sha256 for r, w in files.items()}
    names, recipes = zip(*phase_recipes("phased", {r: f"{r}.jsonl" for r in files if r != "held_out"}), strict=True)
    assert names == ("knowledge (simple)", "knowledge (complex)", "skills")
    assert [s.path for s in recipes[2].sources] == ["skills.jsonl", "knowledge_simple.jsonl", "knowledge_complex.jsonl"]


def test_mix_counts_sums_a_builds_counts_only_while_the_file_is_the_one_it_counted(tmp_path):
    from training.trainer.mixing import count_lines, mix_counts

    source = tmp_path / "a.jsonl"
    source.write_text("".join(json.dumps({"messages": [], "n": n}) + "\n" for n in range(4)))
    recipe = Recipe.from_yaml(f"datasets:\n- path: {source}\n  sampling_size: 1.0\n", path="r")
    _, sha256 = count_lines(source)
    counted = {str(source): (sha256, [1, 10, 100, 1000])}
    (share,) = mix_counts(recipe, seed=0, tokens_of=lambda record: 5, counted=counted)
    assert (share.samples, share.tokens) == (4, 1111)
    for stale in ((sha256, [1, 10, 100]), ("0" * 64, [1, 10, 100, 1000])):  # another length, or other bytes
        (share,) = mix_counts(recipe, seed=0, tokens_of=lambda record: 5, counted={str(source): stale})
        assert share.tokens == 20
