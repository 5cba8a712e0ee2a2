"""Generic text the unedited model writes itself: the fixed openings (written for this project:
everyday questions and sentence starts, not taken from ZsRE, CounterFact, NQ or any other
evaluation set) and :func:`sample_generic_text`. The preservation loss trains on text sampled
after :data:`GENERIC_OPENINGS`; the key statistics may use it as their corpus (``self``);
``locate`` uses text after :data:`HELDOUT_OPENINGS` (never trained on) as its capability
proxy."""
from __future__ import annotations

from typing import List, Sequence

import torch

from .encoding import Encoded
from .modeling import input_device, left_padding, pad_id_of

GENERIC_OPENINGS = [
    "What is the best way to learn a new language?",
    "How do plants make their own food?",
    "Why is the sky blue?",
    "Who was the first person to walk on the moon?",
    "Where do most of the world's bananas grow?",
    "When did people start using paper money?",
    "Which animals can live both in water and on land?",
    "How many bones are in the human body?",
    "What does a computer's memory do?",
    "Explain how a bicycle stays upright.",
    "Write a short note to a friend about the weekend.",
    "Give three tips for staying healthy in winter.",
    "The history of the city begins",
    "In the morning, the market was",
    "My favourite recipe for soup is",
    "The main reason people travel is",
    "Scientists have long wondered whether",
    "The football match ended with",
    "A good teacher always",
    "The river flows through",
    "Once upon a time, in a small village,",
    "The company announced on Monday that",
    "To solve this equation, first",
    "The most important invention of the last century was",
    "Who wrote the play about the prince of Denmark?",
    "What is the capital of the country you would most like to visit?",
    "How long does it take light from the sun to reach the earth?",
    "Which instrument has black and white keys?",
    "What language do people speak in Brazil?",
    "Who painted the ceiling of the famous chapel in Rome?",
    "In which year did the Second World War end?",
    "What is the largest ocean on earth?",
]

HELDOUT_OPENINGS = [
    "What should I pack for a trip to the mountains?",
    "How does a refrigerator keep food cold?",
    "Who invented the telephone?",
    "The old library on the hill",
    "Describe your ideal holiday.",
    "Which planet is closest to the sun?",
    "The weather report for tomorrow says",
    "What is the tallest mountain in Africa?",
    "How do birds know where to migrate?",
    "The new museum opened its doors",
    "Which country has the largest population?",
    "Name a famous composer of classical music.",
]


@torch.no_grad()
def sample_generic_text(model, tok, openings: Sequence[str], n: int, new_tokens: int,
                        seed: int, batch_size: int = 16) -> List[Encoded]:
    """``n`` texts sampled (temperature 1, top-k 50) from ``model`` after the openings (cycled),
    each ending at its first EOS. Deterministic for a seed on one device; the global RNG is
    left as it was. ``prompt_len`` is 1: every next token after the first counts."""
    texts = [openings[i % len(openings)] for i in range(n)]
    out: List[Encoded] = []
    device = input_device(model)
    was = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), left_padding(tok):
            torch.manual_seed(seed)
            for s in range(0, n, batch_size):
                enc = tok(texts[s:s + batch_size], return_tensors="pt", padding=True)
                enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
                gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True,
                                     top_k=50, temperature=1.0, top_p=1.0,
                                     pad_token_id=pad_id_of(tok), eos_token_id=tok.eos_token_id)
                width = enc["input_ids"].shape[1]
                for row in range(gen.shape[0]):
                    ids = gen[row, width - int(enc["attention_mask"][row].sum()):width].tolist()
                    for t in gen[row, width:].tolist():
                        ids.append(t)
                        if t == tok.eos_token_id:
                            break
                    out.append(Encoded(tuple(ids), 1))
    finally:
        model.train(was)
    return out
