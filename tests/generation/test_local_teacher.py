"""The local transformers teacher, on a tiny random Mistral built here: plumbing, not quality."""

import asyncio

import pytest

from generation.models import GenerationRun, RunEvent, Sample, WorkItem
from generation.sdg.teacher import LocalTeacher, Sampling, TeacherError
from generation.services.runs import run_create
from generation.services.teachers import teacher_create
from tests.support.sdg import HAIKU

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
# No brackets in the vocabulary: whatever the random model says, it can never be a "[Question]" block.
CORPUS = [
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
    assert teacher.max_concurrency == 1
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


def test_local_teacher_reports_an_answer_cut_off_by_the_token_limit(endless_model):
    # The pipelines drop a last block cut off by the limit only when the teacher says finish_reason "length".
    completion = asyncio.run(LocalTeacher(model=endless_model).complete(MESSAGES, Sampling(max_tokens=6, seed=1)))
    assert completion.completion_tokens == 6
    assert completion.finish_reason == "length"


def test_local_teacher_at_a_missing_path_says_how_to_use_a_server_instead(tmp_path):
    teacher = LocalTeacher(model=str(tmp_path / "no-such-model"))
    with pytest.raises(TeacherError) as caught:
        asyncio.run(teacher.complete(MESSAGES, Sampling(max_tokens=4)))
    assert str(tmp_path / "no-such-model") in caught.value.message
    assert "OpenAI-compatible" in caught.value.message


@pytest.mark.django_db(transaction=True)
def test_a_run_with_a_local_teacher_finishes_and_reports_unusable_answers_as_malformed(
    eager, tiny_model, curator, demo
):
    teacher = teacher_create(
        user=curator, name="Tiny local", backend="local", model=tiny_model, max_tokens=16, max_concurrency=1
    )
    run = run_create(
        teacher=teacher, user=curator, scope=GenerationRun.Scope.SELECTED, leaf_ids=[demo[HAIKU].pk], samples_per_leaf=2
    )
    run.refresh_from_db()
    items = list(run.items.all())
    assert len(items) == 2
    # Every item ran to its end, but a run that kept nothing has failed, and says where candidates went.
    assert run.status == GenerationRun.Status.FAILED
    assert "No sample passed the judges" in run.error
    for item in items:
        assert item.state == WorkItem.State.DONE, item.error
        assert item.counts == {"questions.malformed": 3}  # one call per round, none of them usable
        assert item.stats["calls"] == 3 and item.stats["completion_tokens"] > 0 and item.stats["prompt_tokens"] > 0
        assert run.events.filter(item=item, level=RunEvent.Level.WARNING, message__contains="kept 0 of 1").exists()
    assert not Sample.objects.filter(run=run).exists()
    assert run.teacher_config["backend"] == "local" and run.teacher_config["model"] == tiny_model


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
    states = list(run.items.order_by("pk").values_list("state", flat=True))
    assert states == [WorkItem.State.FAILED] + [WorkItem.State.CANCELLED] * 3
    assert run.items.get(state=WorkItem.State.FAILED).error == run.error
    assert run.events.filter(level=RunEvent.Level.ERROR, message=run.error).count() == 1
