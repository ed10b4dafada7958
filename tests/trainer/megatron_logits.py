"""Helper run as a subprocess by the tests: logits of a megatron GPTModel built by the trainer's code.

    python tests/trainer/megatron_logits.py --ckpt CKPT_OR_RUN --tokens IN.pt --out OUT.pt
    python tests/trainer/megatron_logits.py --hf HF_DIR --tokens IN.pt --out OUT.pt [--roundtrip RT.pt]

``--ckpt`` loads a trainer checkpoint into a TP=1 model; ``--hf`` imports an HF Llama folder
(``trainer.hf_convert.load_hf_into_model``); ``--roundtrip`` also writes the HF weights converted back
from the megatron model. Logits are cut to the tokenizer's vocabulary.
"""

import argparse
import json
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt")
    ap.add_argument("--hf")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--roundtrip")
    ap.add_argument("--spec", default="local")
    args = ap.parse_args()

    from trainer.distributed import init_distributed, shutdown
    from trainer.model import Arch, arch_from_hf_config, build_gpt, padded_vocab_size, transformer_config

    init_distributed()
    if args.ckpt:
        from trainer.checkpoint import load_model_weights, resolve_checkpoint

        ck = resolve_checkpoint(args.ckpt)
        state = json.loads((ck / "trainer_state.json").read_text())
        arch, vocab, padded = Arch(**state["arch"]), state["vocab_size"], state["padded_vocab"]
        model = build_gpt(transformer_config(arch, spec=args.spec), arch, args.spec, padded, 64)
        load_model_weights(ck, model)
    else:
        from infra.tokenizer import load_tokenizer
        from trainer.hf_convert import load_hf_into_model, megatron_full_to_hf

        arch = arch_from_hf_config(json.loads((Path(args.hf) / "config.json").read_text()))
        vocab = len(load_tokenizer(args.hf, add_tag=True))
        padded = padded_vocab_size(vocab, 128, 1)
        model = build_gpt(transformer_config(arch, spec=args.spec), arch, args.spec, padded, 64)
        load_hf_into_model(model, args.hf, vocab, padded)
        if args.roundtrip:
            sd = {k: v for k, v in model.state_dict().items() if v is not None and not k.endswith("_extra_state")}
            torch.save(megatron_full_to_hf(arch, sd, vocab), args.roundtrip)
    model.eval()
    tokens = torch.load(args.tokens)
    pos = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
    with torch.no_grad():
        logits = model(tokens, pos, None)
    torch.save(logits[..., :vocab].float().contiguous(), args.out)
    shutdown()


if __name__ == "__main__":
    main()
