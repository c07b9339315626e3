"""The trainer: a pure program (no Django) that torchrun starts on each GPU (or CPU) process.

`python -m training.trainer --config FILE` trains one phase of a job from messages JSONL to Hugging Face
checkpoints, writing what it does to `events.jsonl` in its output folder.
"""
