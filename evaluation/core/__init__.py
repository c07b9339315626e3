"""The evaluation core, no Django: the judge's prompt and its `[[rating]]`, per-leaf comparison with a stated
threshold, multiple-choice questions from a knowledge leaf and their log-likelihood scoring, held-out loss, and
the loop that keeps a judge busy."""
