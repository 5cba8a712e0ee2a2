"""One small LocFT edit in its own process, for the kill -9 / resume test.

    python tests/checkpoint_worker.py OUT.pt [CHECKPOINT_DIR|-] [--slow]

Trains layer 2 of the tiny random Llama on 32 synthetic facts (one CPU thread, so every
process computes alike) and saves the new weights and the TrainResult to OUT.pt. ``--slow``
sleeps in every forward (the numbers are unchanged) so the parent can kill it mid-run.
"""
import dataclasses
import sys
import time

import torch

from locft_easyedit import LocFTHyperParams, execute_locft
from locft_easyedit.synthetic import tiny_setup

NUM_EPOCHS = 6


def main(argv):
    out = argv[0]
    ckpt_dir = argv[1] if len(argv) > 1 and argv[1] != "-" else None
    torch.set_num_threads(1)
    model, tok, facts = tiny_setup(32)
    hp = LocFTHyperParams(model_name="tiny", layers=[2], lr=1e-2, num_epochs=NUM_EPOCHS,
                          mini_batch_size=8, device="cpu", checkpoint_dir=ckpt_dir,
                          checkpoint_every_minutes=0.002)
    if "--slow" in argv:
        model.model.layers[3].register_forward_hook(lambda *_: time.sleep(0.03))
    weights, result = execute_locft(model, tok, facts, hp, progress=False)
    torch.save({"weights": weights, "result": dataclasses.asdict(result)}, out)


if __name__ == "__main__":
    main(sys.argv[1:])
