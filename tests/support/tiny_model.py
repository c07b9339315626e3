"""A 2-layer Mistral with random weights and a word-level tokenizer trained on a few sentences, built in a test.

Small enough to train on the CPU in seconds; real enough that transformers, accelerate and torchrun treat it
like any Hugging Face model folder.
"""

from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(
    folder: Path,
    sentences: list[str],
    *,
    chat_template: str = CHATML,
    ends: bool = True,
    hidden: int = 64,
    seed: int = 0,
) -> str:
    """Save a tokenizer over `sentences` and a random 2-layer Mistral to `folder`; return its path.
    With `ends=False` the model has no end-of-sequence token, so it always writes up to the token limit."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    words = [*sentences, "system user assistant"]
    tokenizer.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>" if ends else "</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=chat_template,
    )
    fast.save_pretrained(folder)
    config = MistralConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id if ends else None,
    )
    torch.manual_seed(seed)
    MistralForCausalLM(config).save_pretrained(folder)
    return str(folder)
