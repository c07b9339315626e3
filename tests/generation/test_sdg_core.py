"""The pure generation core: parsing, dedup, chunking, prompts, and whole units against a real HTTP teacher."""

import asyncio
import contextlib
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict

import pytest

from generation.sdg import parsing, prompts
from generation.sdg.chunking import CHARS_PER_TOKEN, chunk_document
from generation.sdg.dedup import NearDuplicates, rouge_l, tokens
from generation.sdg.keepable import unkeepable
from generation.sdg.parsing import MalformedOutput
from generation.sdg.pipelines import PipelineConfig, Unit, ask_count, calls_if_accepted, split_target, unit_runner
from generation.sdg.teachers import (
    CachedTeacher,
    Completion,
    ConcurrencyLimit,
    OpenAITeacher,
    RetryPolicy,
    Sampling,
    Shape,
    TeacherError,
    call_depth,
)
from tests.support.sdg import HAIKU, MEETINGS, MOONS, MOONS_DOCUMENT, closed_port_url, demo_leaf

GARBAGE = "lorem ipsum, no format at all"
HELLO = [{"role": "user", "content": "Say hello."}]


def run_unit(unit: Unit, teacher, config: PipelineConfig | None = None):
    samples = []

    async def emit(batch):
        samples.extend(batch)

    runner = unit_runner(unit, teacher, config or PipelineConfig(), emit)
    result = asyncio.run(runner.run())
    return result, samples


def fingerprint(samples) -> list[tuple]:
    return [(s.key, s.question, s.response, s.context, s.scores, s.raw, s.prompts) for s in samples]


# --- parsing ---------------------------------------------------------------------------------------------


def test_blocks_reads_every_closed_block_and_keeps_an_unclosed_last_one_when_not_truncated():
    text = "[Question]\nFirst?\n[End]\n[question]\n  Second?  \n[End]\n[Question]\nThird?"
    assert parsing.blocks(text, "Question") == ["First?", "Second?", "Third?"]


def test_blocks_drops_a_last_block_cut_off_by_the_token_limit():
    text = "[Question]\nFirst?\n[End]\n[Question]\nSecond, cut off mid"
    assert parsing.blocks(text, "Question", truncated=True) == ["First?"]


def test_blocks_keeps_an_unclosed_block_followed_by_another_even_when_truncated():
    text = "[Question]\nFirst?\n[Question]\nSecond?\n[End]"
    assert parsing.blocks(text, "Question", truncated=True) == ["First?", "Second?"]


def test_blocks_skips_empty_blocks_and_text_outside_blocks():
    text = "Sure! Here you go.\n[Context]\n\n[End]\n[Context]\nA memo.\n[End]\nHope this helps."
    assert parsing.blocks(text, "Context") == ["A memo."]
    assert parsing.blocks("no markers at all", "Context") == []


def test_qa_blocks_keeps_only_pairs_with_both_question_and_answer():
    text = (
        "[Question]\nWhat is Io?\n[Answer]\nA moon of Jupiter.\n[End]\n"
        "[Question]\nNo answer here\n[End]\n"
        "[Question]\n\n[Answer]\nAn answer without question\n[End]\n"
        "[Question]\nWhat is Titan?\n[Answer]\nSaturn's largest moon.\n[End]"
    )
    assert parsing.qa_blocks(text) == [
        ("What is Io?", "A moon of Jupiter."),
        ("What is Titan?", "Saturn's largest moon."),
    ]


def test_qa_blocks_drops_a_pair_cut_off_by_the_token_limit():
    text = "[Question]\nWhat is Io?\n[Answer]\nA moon.\n[End]\n[Question]\nWhat is Titan?\n[Answer]\nSaturn's lar"
    assert parsing.qa_blocks(text, truncated=True) == [("What is Io?", "A moon.")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Clear.\nScore: 1", 1),
        ("Clear.\n**Score:** 2", 2),
        ("First I thought Score: 1, but on reflection\nscore = 3", 3),
    ],
)
def test_score_reads_the_last_score_line(text, expected):
    assert parsing.score(text, stage="pair judgement", allowed=range(1, 4)) == expected


@pytest.mark.parametrize("text", ["", "It is fine.", GARBAGE, "Score: 7", "Score: 0", "Score: high"])
def test_score_missing_or_out_of_range_raises_malformed_output(text):
    with pytest.raises(MalformedOutput) as caught:
        parsing.score(text, stage="pair judgement", allowed=range(1, 4))
    assert caught.value.stage == "pair judgement"
    assert caught.value.raw == text
    assert '"Score: 1..3"' in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"), [("Supported.\nAnswer: YES", True), ("answer: no", False), ("Answer: **Yes**", True)]
)
def test_yes_no_reads_the_verdict(text, expected):
    assert parsing.yes_no(text, stage="faithfulness judgement") is expected


@pytest.mark.parametrize("text", ["", "Yes.", "Answer: yesterday", "Answer: maybe", GARBAGE])
def test_yes_no_without_a_verdict_raises_malformed_output(text):
    with pytest.raises(MalformedOutput) as caught:
        parsing.yes_no(text, stage="faithfulness judgement")
    assert caught.value.stage == "faithfulness judgement"
    assert caught.value.raw == text


def test_rationale_is_the_text_before_the_verdict_line():
    assert parsing.rationale("It is clear and safe.\nScore: 1") == "It is clear and safe."
    assert parsing.rationale("Every claim is in the source.\n  Answer: YES") == "Every claim is in the source."


# --- dedup ---------------------------------------------------------------------------------------------


def test_rouge_l_is_one_for_identical_zero_for_disjoint_and_symmetric():
    a, b = tokens("Write a haiku about the sea"), tokens("Compute the sum of two numbers")
    assert rouge_l(a, a) == 1.0
    assert rouge_l(tokens("alpha beta"), tokens("gamma delta")) == 0.0
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))
    assert rouge_l([], a) == 0.0


def test_rouge_l_measures_the_longest_common_subsequence():
    # LCS of "a b c d" and "a x c d" is "a c d": precision = recall = 3/4.
    assert rouge_l(tokens("a b c d"), tokens("a x c d")) == pytest.approx(0.75)


def test_near_duplicates_rejects_seeds_and_what_it_already_kept_but_admits_new_texts():
    dedup = NearDuplicates(["Write a haiku about a cup of coffee early in the morning."], threshold=0.7)
    assert not dedup.admit("Write a haiku about a cup of tea early in the morning.")  # near the seed
    assert dedup.admit("Describe the water cycle to a ten-year-old.")
    assert not dedup.admit("Describe the water cycle to a ten year old!")  # near the one just kept
    assert dedup.admit("List three uses of copper in electronics.")


def test_near_duplicates_threshold_decides():
    strict = NearDuplicates(["one two three four"], threshold=0.9)
    loose = NearDuplicates(["one two three four"], threshold=0.5)
    assert strict.admit("one two three five")  # ROUGE-L 0.75
    assert not loose.admit("one two three five")


# --- chunking ------------------------------------------------------------------------------------------


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


@pytest.mark.parametrize("max_tokens", [100, 200, 300, 500])
def test_chunks_never_exceed_the_limit(max_tokens):
    document = MOONS_DOCUMENT.read_text(encoding="utf-8")
    limit = max(200, max_tokens * CHARS_PER_TOKEN)
    chunks = chunk_document(document, max_tokens=max_tokens, overlap_tokens=25)
    assert len(chunks) > 1
    too_long = [len(chunk) for chunk in chunks if len(chunk) > limit]
    assert not too_long, f"chunks over the {limit}-character limit: {too_long}"


def test_chunks_keep_paragraphs_whole_and_in_order():
    document = MOONS_DOCUMENT.read_text(encoding="utf-8")
    chunks = chunk_document(document, max_tokens=500, overlap_tokens=0)
    for paragraph in _paragraphs(document):
        assert any(paragraph in chunk for chunk in chunks), paragraph[:60]
    assert "\n\n".join(chunks) == "\n\n".join(_paragraphs(document))  # without overlap, nothing added or lost


def test_consecutive_chunks_overlap_by_the_end_of_the_previous_one():
    paragraphs = [f"Paragraph {n} says " + " ".join(f"word{n}x{i}" for i in range(40)) + "." for n in range(6)]
    chunks = chunk_document("\n\n".join(paragraphs), max_tokens=200, overlap_tokens=20)
    assert len(chunks) >= 3
    for before, after in zip(chunks, chunks[1:], strict=False):
        head = after.split("\n\n", 1)[0]
        assert before.endswith(head), (before[-100:], head)
        assert 0 < len(head) <= 20 * CHARS_PER_TOKEN
        assert not head.startswith(" ")


def test_a_paragraph_longer_than_a_chunk_is_cut_at_sentence_ends():
    sentence = "The probe measured the magnetic field near the moon. "
    long_paragraph = (sentence * 30).strip()
    chunks = chunk_document(long_paragraph, max_tokens=100)
    assert len(chunks) > 1
    assert all(len(chunk) <= 400 for chunk in chunks)
    assert all(chunk.endswith(".") for chunk in chunks)
    # Each chunk after the first opens with the end of the one before (the overlap), then goes on.
    rest = [chunk.split("\n\n", 1)[-1] for chunk in chunks[1:]]
    assert " ".join([chunks[0], *rest]) == long_paragraph


def test_a_long_paragraph_without_sentence_ends_is_cut_between_words():
    long_paragraph = " ".join(f"token{i}" for i in range(200))  # no ". " anywhere
    chunks = chunk_document(long_paragraph, max_tokens=100, overlap_tokens=0)
    assert len(chunks) > 1
    words = set(long_paragraph.split())
    broken = [word for chunk in chunks for word in chunk.split() if word not in words]
    assert not broken, f"words cut in two: {broken[:6]}"


def test_empty_document_has_no_chunks():
    assert chunk_document("") == []
    assert chunk_document("\n\n  \n") == []


# --- split_target, prompts, config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(10, 3, [4, 3, 3]), (12, 6, [2] * 6), (2, 5, [1, 1, 0, 0, 0]), (7, 1, [7]), (5, 0, []), (-3, 2, [0, 0])],
)
def test_split_target_shares_the_total_as_evenly_as_possible(total, parts, expected):
    assert split_target(total, parts) == expected


PROMPT_NAMES = {
    "knowledge_faithfulness",
    "knowledge_qa",
    "knowledge_question",
    "knowledge_relevance",
    "pair_judge",
    "question_judge",
    "skills_contexts",
    "skills_grounded_questions",
    "skills_questions",
    "skills_response",
}


def test_every_prompt_loads_with_a_version_and_a_versioned_ref():
    versions = prompts.prompt_versions()
    assert set(versions) == PROMPT_NAMES
    for name, version in versions.items():
        prompt = prompts.load_prompt(name)
        assert version >= 1
        assert prompt.ref == f"{name}@v{version}"
        assert prompt.user.strip()


def test_prompt_messages_substitute_every_variable():
    messages = prompts.load_prompt("skills_questions").messages(
        task_description="Writing haiku.", examples="[Question]\nA haiku on rain.\n[End]", count=7
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Write 7 new instructions" in messages[1]["content"]
    assert "Writing haiku." in messages[1]["content"]
    assert "$" not in messages[1]["content"]


def test_prompt_messages_missing_a_variable_raise():
    with pytest.raises(KeyError):
        prompts.load_prompt("skills_questions").messages(task_description="Writing haiku.")


def test_a_prompt_file_without_a_version_line_is_refused(tmp_path, monkeypatch):
    (tmp_path / "unversioned.txt").write_text("[system]\nYou help.\n[user]\nHello $name\n", encoding="utf-8")
    (tmp_path / "versioned.txt").write_text("# version: 4\n[system]\nYou help.\n[user]\nHi $name\n", encoding="utf-8")
    monkeypatch.setattr(prompts, "PROMPT_DIR", tmp_path)
    prompts.load_prompt.cache_clear()
    try:
        with pytest.raises(ValueError, match="version"):
            prompts.load_prompt("unversioned")
        assert prompts.load_prompt("versioned").ref == "versioned@v4"
    finally:
        prompts.load_prompt.cache_clear()


def test_pipeline_config_survives_the_json_round_trip_a_run_stores():
    config = PipelineConfig(sampling=Sampling(temperature=0.3, seed=11), questions_per_call=4, max_rounds=2)
    assert PipelineConfig.from_dict(asdict(config)) == config


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap():
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=30.0)
    for _ in range(50):
        assert 0.5 <= policy.delay(0) <= 1.0
        assert 4.0 <= policy.delay(3) <= 8.0
        assert 15.0 <= policy.delay(12) <= 30.0


# --- units against the scripted HTTP teacher -------------------------------------------------------------


def test_freeform_skills_unit_reaches_its_target(make_teacher, script):
    leaf = demo_leaf(HAIKU)
    result, samples = run_unit(Unit(leaf=leaf, target=8, seed_index=2), make_teacher())
    assert result.kept == len(samples) == 8
    assert len({s.key for s in samples}) == 8
    seeds = {seed["question"] for seed in leaf.seeds}
    for sample in samples:
        assert sample.context is None and sample.chunk_index is None
        assert sample.seed_indices == [2, 3, 4]
        assert sample.question not in seeds and sample.response
        assert sample.scores == {"question": 1, "pair": 3}
        assert sample.prompts == ["skills_questions@v1", "question_judge@v1", "skills_response@v1", "pair_judge@v1"]
        assert set(sample.raw) == {"questions", "question_judge", "response", "pair_judge"}
    assert script.statuses == {200: script.requests}


def test_a_target_beyond_one_call_takes_more_rounds_with_new_questions(make_teacher):
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=15, seed_index=0), make_teacher())
    assert result.kept == 15 and result.rounds == 2
    assert len({s.question for s in samples}) == 15
    assert {s.key.split("-")[0] for s in samples} == {"r0", "r1"}


def test_rejected_questions_are_not_kept_and_more_rounds_make_up_for_them(make_teacher, script):
    script.reject_question_every = 3
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=8, seed_index=0), make_teacher())
    assert result.counts["question_judge.rejected"] >= 1
    rejected = {
        _instruction(e["prompt"])
        for e in script.exchanges
        if "Score: 0" in e["text"] and "Is this instruction" in e["prompt"]
    }
    assert rejected and not rejected & {s.question for s in samples}
    assert result.kept == len(samples) == 8


def _calls_by_prompt(script) -> Counter:
    kinds = {
        "Is this instruction clear": "question_judge",
        "Rate the response": "pair_judge",
        "instructions about this context": "grounded_questions",
        "[Context]": "contexts",
        "[Question]": "questions",
    }
    return Counter(
        next((kind for text, kind in kinds.items() if text in e["prompt"]), "response") for e in script.exchanges
    )


@pytest.mark.parametrize("target", [1, 6, 15])
def test_with_every_judge_accepting_a_unit_asks_only_the_chains_of_the_samples_it_keeps(make_teacher, script, target):
    # The pipeline's floor: one question judge, one response and one pair judge a kept sample, plus the
    # generating calls (one a round: 10 questions at most a call, so 15 samples take two).
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=target, seed_index=0), make_teacher())
    rounds = -(-target // 10)
    assert result.kept == len(samples) == target and result.rounds == rounds
    calls = _calls_by_prompt(script)
    assert calls == {"questions": rounds, "question_judge": target, "response": target, "pair_judge": target}
    assert script.requests == rounds + 3 * target
    assert script.requests == calls_if_accepted(Unit(leaf=demo_leaf(HAIKU), target=target), PipelineConfig())


def test_a_grounded_unit_asks_for_a_context_s_questions_only_when_the_contexts_before_it_fell_short(
    make_teacher, script
):
    leaf = demo_leaf(MEETINGS)
    result, _ = run_unit(Unit(leaf=leaf, target=4, seed_index=0), make_teacher())
    assert result.kept == 4
    # ceil(4 / 3) = 2 contexts' questions: 1 + 2 generating calls, then 3 calls each for 4 samples.
    assert _calls_by_prompt(script) == {
        "contexts": 1,
        "grounded_questions": 2,
        "question_judge": 4,
        "response": 4,
        "pair_judge": 4,
    }
    assert script.requests == calls_if_accepted(Unit(leaf=leaf, target=4), PipelineConfig()) == 15


def test_with_half_the_questions_rejected_a_unit_still_reaches_its_target_paying_a_judge_call_per_rejection(
    make_teacher, script
):
    script.reject_question_every = 2  # the question judge says no to about half, by request hash
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=6, seed_index=0), make_teacher())
    calls = _calls_by_prompt(script)
    rejected = result.counts["question_judge.rejected"]
    assert result.kept == len(samples) == 6
    assert rejected >= 3, "the script should have rejected about half"
    # Only an accepted question goes on to a response and a pair judge; a rejected one costs its judge call.
    assert calls["response"] == calls["pair_judge"] == 6
    assert calls["question_judge"] == 6 + rejected
    assert calls["questions"] == result.rounds <= 3
    assert script.requests / 6 <= 3 + rejected / 6 + 3 / 6


def test_a_round_asks_for_half_again_before_any_verdict_and_after_by_the_pass_rate_so_far():
    assert ask_count(6, 10) == 9
    assert ask_count(1, 10) == 2  # never fewer than two: one spare
    assert ask_count(8, 10) == 10  # never more than a call may ask
    assert ask_count(2, 10, settled=9, passed=5) == 5  # 2 x 1.25 / (5/9) = 4.5
    assert ask_count(2, 10, settled=6, passed=6) == 3
    assert ask_count(3, 10, settled=4, passed=0) == 10  # none passed: the rate taken as 1 in 10


def _instruction(prompt: str) -> str:
    return re.search(r"Instruction(?: to review)?:\n(.*?)\n\n", prompt, re.S).group(1)


def test_grounded_unit_generates_contexts_first_and_samples_carry_their_context(make_teacher, script):
    leaf = demo_leaf(MEETINGS)
    assert leaf.grounded
    result, samples = run_unit(Unit(leaf=leaf, target=6, seed_index=1), make_teacher())
    assert result.kept == len(samples) == 6
    first = script.exchanges[0]
    assert "[Context]" in first["prompt"] and leaf.seeds[1]["context"].strip() in first["prompt"]
    contexts = parsing.blocks(first["text"], "Context")
    assert len(contexts) == 3
    # Three questions a context: the first two contexts give the six candidates; the third is never asked about.
    question_prompts = [e["prompt"] for e in script.exchanges if "instructions about this context" in e["prompt"]]
    assert len(question_prompts) == 2
    assert [contexts[0] in question_prompts[0], contexts[1] in question_prompts[1]] == [True, True]
    for sample in samples:
        assert sample.context in contexts[:2]
        assert sample.context != leaf.seeds[1]["context"]
        assert sample.prompts[:2] == ["skills_contexts@v1", "skills_grounded_questions@v1"]
        assert sample.raw["contexts"] == first["text"]
        asked = [e for e in script.exchanges if "instructions about this context" in e["prompt"]]
        assert any(sample.context in e["prompt"] and sample.question in e["text"] for e in asked)
    judged = [e["prompt"] for e in script.exchanges if "Is this instruction clear" in e["prompt"]]
    assert judged and all("Context:\n" in prompt for prompt in judged)


def test_knowledge_unit_keeps_only_pairs_judged_faithful_to_the_chunk(make_teacher, script):
    script.unfaithful_every = 3
    chunk = chunk_document(MOONS_DOCUMENT.read_text(encoding="utf-8"), max_tokens=300)[1]
    result, samples = run_unit(Unit(leaf=demo_leaf(MOONS), target=6, chunk_index=1, chunk=chunk), make_teacher())
    verdicts = {
        re.search(r"\nQuestion: (.*)\nAnswer:", e["prompt"]).group(1): e["text"].endswith("YES")
        for e in script.exchanges
        if "supported by the source" in e["prompt"]
    }
    unfaithful = {question for question, faithful in verdicts.items() if not faithful}
    assert unfaithful, "the script should have judged some pairs unfaithful"
    assert result.counts["faithfulness.rejected"] == len(unfaithful)
    assert result.kept == len(samples) == 6
    for sample in samples:
        assert verdicts[sample.question] is True
        assert sample.scores["faithful"] is True
        assert sample.context == chunk and sample.chunk_index == 1
        assert "knowledge_faithfulness@v1" in sample.prompts
    assert not unfaithful & {s.question for s in samples}


def test_a_second_run_with_the_same_cache_asks_nothing_and_yields_identical_samples(make_teacher, script):
    unit = Unit(leaf=demo_leaf(MEETINGS), target=4, seed_index=0)
    model = f"replay-{uuid.uuid4().hex[:8]}"
    first_result, first = run_unit(unit, make_teacher(model=model))
    paid = script.requests
    assert paid > 0
    teacher = make_teacher(model=model)
    second_result, second = run_unit(unit, teacher)
    assert script.requests == paid
    assert teacher.stats.calls == 0 and teacher.stats.cached > 0
    assert fingerprint(second) == fingerprint(first)
    assert second_result.counts == first_result.counts


def test_a_teacher_call_sends_the_chat_completions_request_the_server_expects(make_teacher, script):
    teacher = make_teacher(model="exact-body")
    sampling = Sampling(temperature=0.3, top_p=0.9, max_tokens=77, seed=5)
    completion = asyncio.run(teacher.complete(HELLO, sampling))
    sent = {"model": "exact-body", "messages": HELLO, "temperature": 0.3, "top_p": 0.9, "max_tokens": 77, "seed": 5}
    assert script.requests_sent == [sent]  # no `n`: LabWeb never relies on one (several servers ignore it)
    assert completion.text and completion.prompt_tokens > 0 and completion.finish_reason == "stop"


def test_teacher_time_counts_the_calls_not_the_wait_for_a_slot(make_teacher, script):
    script.latency = 0.1
    teacher = make_teacher(max_concurrency=1)

    async def three_at_once():
        await asyncio.gather(*(teacher.complete(HELLO, Sampling(seed=n)) for n in range(3)))

    asyncio.run(three_at_once())
    # One after another through the single slot: 0.3 s of teacher work, though the three waited 0.6 s in all.
    assert 0.3 <= teacher.stats.seconds < 0.55  # counting the wait would make it at least 0.6


@pytest.mark.parametrize("steers", [False, True])
def test_a_shape_reaches_and_keys_only_a_teacher_that_steers_its_decoding(memory_cache, steers):
    class Recorder:
        model, max_concurrency = "recorder", 1

        def __init__(self):
            self.steers, self.shapes = steers, []

        async def complete(self, messages, sampling, stats=None, shape=None):
            self.shapes.append(shape)
            return Completion(text="Fine.\nScore: 1")

    recorder = Recorder()
    teacher = CachedTeacher(teacher=recorder, lookup=memory_cache.lookup, store=memory_cache.store)
    shape = Shape(verdict="Score:", choices=(" 0", " 1"))

    async def ask_twice():
        await teacher.complete(HELLO, Sampling(seed=1), shape)
        await teacher.complete(HELLO, Sampling(seed=1))  # the same request without a shape

    asyncio.run(ask_twice())
    # A server is sent the prompt alone, so the shape changes nothing and the second request is a cache hit.
    assert recorder.shapes == ([shape, None] if steers else [None])
    assert teacher.stats.cached == (0 if steers else 1)


def test_in_flight_requests_reach_but_never_exceed_max_concurrency(make_teacher, script):
    script.latency = 0.05
    result, _ = run_unit(Unit(leaf=demo_leaf(HAIKU), target=8, seed_index=0), make_teacher(max_concurrency=3))
    assert result.kept == 8
    assert script.max_in_flight == 3


def test_the_concurrency_limit_holds_across_event_loops_in_worker_threads(make_teacher, script):
    # A Celery thread pool runs one event loop per thread; they all share one teacher's limit.
    script.latency = 0.03
    model = f"shared-{uuid.uuid4().hex[:8]}"
    results, errors = [], []

    def work(seed_index):
        try:
            results.append(
                run_unit(
                    Unit(leaf=demo_leaf(HAIKU), target=4, seed_index=seed_index),
                    make_teacher(model=model, max_concurrency=2),
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert [result.kept for result, _ in results] == [4, 4, 4]
    assert script.max_in_flight == 2


@pytest.mark.parametrize(("fault", "status"), [("fail_every", 500), ("rate_limit_every", 429)])
def test_server_errors_and_rate_limits_are_retried_until_they_succeed(make_teacher, script, fault, status):
    setattr(script, fault, 3)
    teacher = make_teacher(retry=RetryPolicy(attempts=12, base_delay=0.001, max_delay=0.005))
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=6, seed_index=0), teacher)
    assert result.kept == len(samples) == 6
    assert script.statuses[status] >= 3
    assert teacher.stats.errors == teacher.stats.retries == script.statuses[status]
    assert teacher.stats.calls == script.requests == sum(script.statuses.values())  # every attempt is a call


def test_a_hanging_request_times_out_and_is_retried(make_teacher, script):
    script.hang_every = 4
    teacher = make_teacher(timeout=0.5)
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=3, seed_index=0), teacher)
    assert result.kept == len(samples) == 3
    hung = script.requests - sum(script.statuses.values())  # the hung ones have not answered yet
    assert hung >= 1
    assert teacher.stats.retries >= hung  # (a slow machine may time out an answer that was merely late)


def test_a_teacher_that_never_answers_in_time_raises_a_retryable_timeout(make_teacher, script):
    script.hang_every = 1
    teacher = make_teacher(timeout=0.2, retry=RetryPolicy(attempts=2, base_delay=0.001))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(HELLO, Sampling()))
    assert "did not answer within 0.2 s" in caught.value.message
    assert caught.value.retryable
    assert script.requests == 2


def test_garbage_judge_output_counts_as_malformed_and_is_not_kept(make_teacher, script):
    script.garbage_every = 4
    result, samples = run_unit(Unit(leaf=demo_leaf(HAIKU), target=6, seed_index=0), make_teacher())
    malformed_judges = result.counts["question_judge.malformed"] + result.counts["pair_judge.malformed"]
    assert malformed_judges >= 1
    garbage_judged = {
        _instruction(e["prompt"])
        for e in script.exchanges
        if e["text"] == GARBAGE and ("Is this instruction clear" in e["prompt"] or "Rate the response" in e["prompt"])
    }
    assert len(garbage_judged) == malformed_judges
    kept = {s.question for s in samples}
    assert not garbage_judged & kept
    for sample in samples:
        assert GARBAGE not in (sample.raw["question_judge"], sample.raw["pair_judge"])
    assert 1 <= result.kept <= 6


def test_an_unreachable_teacher_raises_teacher_error_naming_its_url():
    url = closed_port_url()
    teacher = OpenAITeacher(base_url=url, model="m", retry=RetryPolicy(attempts=2, base_delay=0.001))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(HELLO, Sampling()))
    assert url in caught.value.message
    assert "Cannot reach" in caught.value.message
    assert caught.value.retryable


def test_a_unit_whose_teacher_is_unreachable_fails_with_the_teacher_error(memory_cache):
    from generation.sdg.teachers import CachedTeacher

    url = closed_port_url()
    client = OpenAITeacher(base_url=url, model="m-unreachable", retry=RetryPolicy(attempts=2, base_delay=0.001))
    teacher = CachedTeacher(teacher=client, lookup=memory_cache.lookup, store=memory_cache.store)
    with pytest.raises(TeacherError, match=re.escape(url)):
        run_unit(Unit(leaf=demo_leaf(HAIKU), target=2, seed_index=0), teacher)


def test_a_non_retryable_client_error_fails_at_once(make_teacher, script):
    script.bad_request_every = 1
    teacher = make_teacher(retry=RetryPolicy(attempts=5, base_delay=0.001))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(HELLO, Sampling()))
    assert caught.value.http_status == 400
    assert not caught.value.retryable
    assert "HTTP 400" in caught.value.message and "scripted bad request" in caught.value.message
    assert script.requests == 1
    assert teacher.stats.retries == 0


def test_a_unit_stops_at_the_first_non_retryable_error(make_teacher, script):
    script.bad_request_every = 1
    with pytest.raises(TeacherError, match="HTTP 400"):
        run_unit(Unit(leaf=demo_leaf(HAIKU), target=4, seed_index=0), make_teacher())
    assert script.requests == 1


def test_an_answer_that_is_not_valid_json_is_a_teacher_error_naming_the_teacher(make_teacher, script, teacher_server):
    script.broken_json_every = 1
    teacher = make_teacher(retry=RetryPolicy(attempts=2, base_delay=0.001))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(HELLO, Sampling()))
    assert teacher_server.url in caught.value.message
    assert script.requests == 2  # a cut-off body is worth asking again, like a 5xx


def test_the_waiting_call_with_the_most_calls_after_it_gets_the_next_slot_then_the_earliest():
    async def scenario() -> list[str]:
        limit, entered = ConcurrencyLimit(1), []

        async def call(name: str, depth: int):
            call_depth.set(depth)
            async with limit:
                entered.append(name)
                await asyncio.sleep(0)

        await limit.__aenter__()  # the one slot is taken; these queue in this order
        waiters = [
            asyncio.create_task(call(name, depth))
            for name, depth in [("judge", 0), ("questions", 3), ("response", 1), ("other questions", 3)]
        ]
        await asyncio.sleep(0)
        await limit.__aexit__(None, None, None)
        await asyncio.gather(*waiters)
        return entered

    assert asyncio.run(scenario()) == ["questions", "other questions", "response", "judge"]


def test_a_waiter_cancelled_as_the_slot_is_released_does_not_leave_an_extra_slot():
    # What a cancelled run does: every task of the unit is cancelled at once, holders and waiters alike.
    async def scenario() -> bool:
        limit = ConcurrencyLimit(1)
        await limit.__aenter__()  # the one slot is taken
        waiter = asyncio.create_task(limit.__aenter__())
        await asyncio.sleep(0)  # the waiter queues
        waiter.cancel()
        await limit.__aexit__(None, None, None)  # the holder lets go before the waiter sees its cancellation
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        await limit.__aenter__()  # the slot is free again: one enters ...
        second = asyncio.create_task(limit.__aenter__())
        await asyncio.sleep(0.05)
        entered = second.done()  # ... and a second must wait
        second.cancel()
        return entered

    assert asyncio.run(scenario()) is False


def test_cancelling_a_unit_midway_keeps_the_limit_for_the_next_one(make_teacher, script):
    script.latency = 0.05
    model = f"limited-{uuid.uuid4().hex[:8]}"

    async def cancel_midway():
        samples = []

        async def emit(batch):
            samples.extend(batch)

        unit = Unit(leaf=demo_leaf(HAIKU), target=10, seed_index=0)
        task = asyncio.ensure_future(
            unit_runner(unit, make_teacher(model=model, max_concurrency=2), PipelineConfig(), emit).run()
        )
        while script.requests < 4:  # past the question call, with judges in flight and more waiting
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    time.sleep(0.1)  # let the cancelled requests finish on the server
    script.max_in_flight = 0
    result, _ = run_unit(
        Unit(leaf=demo_leaf(HAIKU), target=8, seed_index=1), make_teacher(model=model, max_concurrency=2)
    )
    assert result.kept == 8
    assert script.max_in_flight == 2


def test_text_a_person_would_not_keep_is_told_apart_from_short_or_numeric_answers():
    for kept in ("12 + 7 = 19", "Yes.", "It is the river.", "Use `x = f(a, b)` here", "old pond\nfrog jumps in"):
        assert unkeepable(kept) is None, kept
    assert unkeepable("Explain what a monad is", answer=False) is None  # a question may end without a full stop
    for junk, reason in [
        ("\x07\x1b[0m junk", "control"),
        ("caf\u00c3\u00a9 au lait", "mis-decoded"),
        ("#$%^&*@!~#$%", "symbols"),
        (" ".join(["the"] * 10), "repeats"),
        ("It is the", "mid-sentence"),
        ("", "empty"),
    ]:
        assert reason in (unkeepable(junk) or ""), junk
    assert "token limit" in unkeepable("A whole sentence.", truncated=True)


def test_garbage_and_cut_off_answers_never_become_samples_though_the_judges_pass_everything(make_teacher, script):
    script.junk_every = 4
    script.cut_every = 7
    unit = Unit(leaf=demo_leaf(HAIKU), target=6, seed_index=0)
    # One call at a time, so which calls the script spoils does not depend on thread timing.
    result, samples = run_unit(unit, make_teacher(max_concurrency=1), PipelineConfig(max_rounds=12))
    assert len(samples) == 6  # what was dropped was made up for
    assert result.counts["response.unkeepable"] > 0
    junk_or_cut = {e["text"] for e in script.exchanges if "\x07" in e["text"]}
    for sample in samples:
        assert unkeepable(sample.response) is None and unkeepable(sample.question, answer=False) is None
        assert sample.response not in junk_or_cut


@pytest.mark.parametrize("path", [HAIKU, MEETINGS, MOONS])
def test_junk_inside_well_formed_answers_is_never_kept_nor_sent_on_to_another_call(make_teacher, script, path):
    # Every third answer that is no verdict keeps its [Tag] format but carries control and mis-decoded bytes in
    # each line: questions, grounded contexts, responses and knowledge pairs alike. The judges pass everything.
    script.junk_inside_every = 3
    chunk = chunk_document(MOONS_DOCUMENT.read_text(encoding="utf-8"), max_tokens=300)[0] if path == MOONS else None
    unit = Unit(leaf=demo_leaf(path), target=4, seed_index=None if chunk else 0, chunk_index=0 if chunk else None,
                chunk=chunk)  # fmt: skip
    result, samples = run_unit(unit, make_teacher(max_concurrency=1), PipelineConfig(max_rounds=12))
    assert len(samples) == 4  # what was dropped was made up for
    assert sum(count for name, count in result.counts.items() if name.endswith(".unkeepable")) > 0
    for sample in samples:
        assert unkeepable(sample.response) is None and unkeepable(sample.question, answer=False) is None
        assert sample.context is None or unkeepable(sample.context, answer=False) is None
    # Nothing a person would not keep is judged, answered or asked about: no later prompt carries it.
    assert [e["number"] for e in script.exchanges if "\x07" in e["text"]]
    assert not [e["number"] for e in script.exchanges if "\x07" in e["prompt"]]
