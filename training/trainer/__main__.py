"""`torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m training.trainer --config FILE`."""

from training.trainer.run import main

raise SystemExit(main())
