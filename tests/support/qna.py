"""Small valid InstructLab files that tests build taxonomies from."""

# A minimal valid compositional skill (schema version 3: five seed examples).
POEMS = b"""version: 3
task_description: Write short poems.
created_by: someone
seed_examples:
  - question: q1
    answer: a1
  - question: q2
    answer: a2
  - question: q3
    answer: a3
  - question: q4
    answer: a4
  - question: q5
    answer: a5
"""
