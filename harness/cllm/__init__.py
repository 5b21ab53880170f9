"""CLLM (Kou et al. 2024, arXiv 2403.00835): consistency fine-tuning so that Jacobi decoding converges fast.

    harness cllm collect --task gsm8k --limit 400 --out traj.jsonl     # Jacobi trajectories (trajectories.py)
    harness cllm train --data traj.jsonl --out ckpt/                   # consistency + AR loss (train.py)
    harness run --method cllm -O checkpoint=ckpt/ --task gsm8k         # methods/cllm.py
"""
