"""A decoder reward model over protobuf's 2 GiB limit, exported and served as transformers
scores it (the ONNX weights go to ``model.onnx.data``).

    PYTHONPATH=. .venv/bin/python bench/big_export.py --work /tmp/big

Builds a random 591M-parameter Llama (2.37 GB of fp32 weights, most in a 560k-row
embedding), exports it with ``rankrm export``, and prints the files written, the export's
checks, the time, the peak memory and |served - transformers| on a conversation. It needs
about 8 GB of memory and 10 GB of disk; it removes its files at the end.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

from rankrm.runtime import OnnxRewardModel
from tests.conftest import build_chat_tokenizer
from tests.training.test_export import texts_file
from training.export import ExportConfig, export_model

CONVERSATION = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rankrm-big-export"))
    work: Path = parser.parse_args().work
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    checkpoint, out = work / "checkpoint", work / "model"
    build_chat_tokenizer(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    config = LlamaConfig(
        vocab_size=560_000, hidden_size=1024, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, intermediate_size=2048, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, num_labels=1, tie_word_embeddings=False,
    )  # fmt: skip
    model = AutoModelForSequenceClassification.from_config(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M")
    model.save_pretrained(checkpoint)
    del model
    try:
        started = time.perf_counter()
        report = export_model(
            ExportConfig(checkpoint, out, reference=texts_file(work / "ref.jsonl"), max_length=256)
        )
        print(f"export: {time.perf_counter() - started:.0f} s {report.timings}")
        for path in sorted(out.iterdir()):
            print(f"  {path.name}: {path.stat().st_size:,} bytes")
        print(f"checks: {report.manifest.checks}")
        served = OnnxRewardModel.load(out)
        got = float(served.run_encodings(served.encode_conversations([CONVERSATION]))[0])
        reference = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        encoded = tokenizer.apply_chat_template(
            CONVERSATION, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            want = float(reference(**encoded).logits[0, 0])
        print(f"served {got:.7f}, transformers {want:.7f}, |diff| {abs(got - want):.1e}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS: {peak:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
