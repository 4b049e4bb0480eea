"""The public surface: ``rankrm`` exposes exactly these names, each loaded on first use."""

from __future__ import annotations

import subprocess
import sys

PUBLIC = {
    "rankrm.client": ["AsyncRewardClient", "RewardClient", "RewardServiceError"],
    "rankrm.encoding": ["EncodingSpec", "configure_tokenizer", "encode", "encode_conversation"],
    "rankrm.manifest": ["Manifest", "ManifestError", "load_manifest"],
    "rankrm.runtime": ["OnnxRewardModel"],
    "training.config": ["TrainConfig"],
    "training.train": ["train"],
    "training.data": ["load_lists"],
    "training.export": ["ExportConfig", "export_model"],
}


def run(code: str) -> None:
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_the_public_names_are_exactly_these() -> None:
    names = sorted([*(n for group in PUBLIC.values() for n in group), "__version__"])
    run(f"import rankrm\nassert sorted(rankrm.__all__) == sorted({names!r}), rankrm.__all__")


def test_importing_rankrm_loads_nothing_heavy_and_each_name_loads_from_its_module() -> None:
    checks = ["import sys, rankrm"]
    checks.append("assert not {'httpx', 'torch', 'onnxruntime'} & set(sys.modules)")
    for module, names in PUBLIC.items():
        for name in names:
            checks.append(f"assert getattr(rankrm, {name!r}) is sys.modules[{module!r}].{name}")
    run("\n".join(checks))


def test_the_client_and_the_encoding_contract_never_load_torch() -> None:
    run(
        "import sys\n"
        "from rankrm import RewardClient, EncodingSpec, encode, load_manifest, OnnxRewardModel\n"
        "assert 'torch' not in sys.modules"
    )
