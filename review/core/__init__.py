"""The pure core of review (no Django): the state rule for k reviewers, agreement statistics, the word diff."""
