"""Export: every architecture family, the checks, int8, normalisation, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from rankrm.manifest import load_manifest
from rankrm.runtime import OnnxRewardModel
from tests.conftest import build_tiny_backbone, checkpoint_of, texts_file
from tests.training.test_train import config as train_config
from tests.training.test_train import separable_lists
from training import export as export_module
from training import export_precision
from training.data import load_lists
from training.errors import ExportCheckError
from training.export import ExportConfig, ExportError, export_model
from training.model import load_reward_model
from training.train import train


def architectures(tmp: Path) -> dict[str, Path]:
    """Tiny random-initialised RoBERTa, DeBERTa-v2, ModernBERT and Llama sharing the tiny
    tokenizer."""
    from transformers import (
        AutoModelForSequenceClassification,
        DebertaV2Config,
        LlamaConfig,
        ModernBertConfig,
        RobertaConfig,
    )

    bert = checkpoint_of(build_tiny_backbone(tmp / "bert-backbone"), tmp / "bert")
    vocab = Tokenizer.from_file(str(bert / "tokenizer.json")).get_vocab_size()
    small: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
        pad_token_id=0,
    )
    configs = {
        "roberta": RobertaConfig(**small, type_vocab_size=1),
        "deberta-v2": DebertaV2Config(
            **small, type_vocab_size=0, relative_attention=True, pos_att_type=["p2c", "c2p"]
        ),
        "llama": LlamaConfig(**small, num_key_value_heads=2),
        # Its second layer attends through a 16-token sliding window: the texts are longer.
        "modernbert": ModernBertConfig(
            **small,
            local_attention=16,
            layer_types=["full_attention", "sliding_attention"],
            bos_token_id=1,
            cls_token_id=1,
            eos_token_id=1,
            sep_token_id=1,
        ),
    }
    folders = {"bert": bert}
    for name, cfg in configs.items():
        folder = tmp / name
        cfg.num_labels = 1
        AutoModelForSequenceClassification.from_config(cfg).save_pretrained(folder)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            (folder / file).write_bytes((bert / file).read_bytes())
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return architectures(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v2", "modernbert", "llama"])
def test_each_family_exports_and_matches_torch(
    families: dict[str, Path], family: str, tmp_path: Path
) -> None:
    data = texts_file(tmp_path / "ref.jsonl")
    out = tmp_path / "model"
    config = ExportConfig(checkpoint=families[family], out=out, reference=data, eval_file=data)
    report = export_model(config)
    manifest = load_manifest(out)  # checksums verified
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]
    expected_inputs = ["input_ids", "attention_mask"]
    if family == "bert":
        expected_inputs.append("token_type_ids")
    assert manifest.input_names == expected_inputs
    assert manifest.pooling == {"llama": "last-non-pad-token", "bert": "cls-pooler"}.get(
        family, "first-token"
    )
    assert report.manifest.checks["parity_max_abs_vs_torch"] <= 1e-4
    assert report.manifest.checks["batch_invariance_max_abs"] <= 1e-5
    assert report.manifest.checks["loads_without_torch"] is True

    # What the service will run gives torch's rewards, shifted by the manifest offset.
    onnx_model = OnnxRewardModel.load(out)
    rm = load_reward_model(families[family])
    lists = load_lists(data).lists
    prompts = [lst.prompt for lst in lists for _ in lst.responses]
    responses = [r for lst in lists for r in lst.responses]
    raw = onnx_model.raw_scores(prompts, responses, batch_size=4)
    np.testing.assert_allclose(raw, rm.score(prompts, responses).numpy(), atol=1e-4)
    normalized = onnx_model.normalize(raw)
    assert abs(float(normalized.mean())) < 1e-4  # offset = mean over the reference texts
    # Reported figures are normalised like the service's answers.
    assert abs(report.manifest.evaluation["dev"]["exported"]["reward_mean"]) < 1e-4


def test_tokenizer_is_saved_without_padding_or_truncation(
    families: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "model"
    export_model(ExportConfig(families["bert"], out, reference=texts_file(tmp_path / "r.jsonl")))
    saved = json.loads((out / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained briefly on a separable set, with its run config beside it."""
    tmp = tmp_path_factory.mktemp("trained")
    backbone = build_tiny_backbone(tmp / "bb")
    return train(train_config(tmp, backbone, max_steps=30, eval_every=0)).best


def test_int8_export_is_batch_invariant_and_reports_against_fp32(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    test = separable_lists(tmp_path / "test.jsonl", 16, seed=5)
    report = export_model(ExportConfig(trained, out, quantize="int8", test_file=test))
    q = report.manifest.quantization
    assert q["scheme"] == "int8-per-token" and q["meets_bars"] is True
    assert q["quantized_nodes"] > 0
    assert q["batch_invariance_in_std"] <= 1e-3
    for key in (
        "speedup",
        "max_abs_change",
        "mean_abs_change",
        "spearman",
        "pairwise_accuracy_change",
    ):
        assert isinstance(q[key], float)
    evaluation = report.manifest.evaluation
    assert set(evaluation["test"]) == {"file", "exported", "fp32"}
    assert evaluation["dev"]["exported"]["pairwise_accuracy"] > 0.9
    card = (out / "README.md").read_text()
    assert "Quantisation against fp32" in card and "rankrm train" in card


def test_int8_missing_the_bars_is_refused_and_nothing_is_written(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_precision, "MAX_ACCURACY_DROP", -1.0)  # an impossible bar
    out = tmp_path / "int8"
    with pytest.raises(ExportCheckError, match="int8 model refused: held-out pairwise accuracy"):
        export_model(ExportConfig(trained, out, quantize="int8"))
    assert list(tmp_path.iterdir()) == []  # no model folder, no staging left behind


def test_forced_int8_is_written_flagged(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_precision, "MAX_ACCURACY_DROP", -1.0)
    out = tmp_path / "int8"
    report = export_model(ExportConfig(trained, out, quantize="int8", force=True))
    assert report.manifest.quantization["meets_bars"] is False
    assert "MISSES the bars" in (out / "README.md").read_text()


def test_failed_export_keeps_the_previous_model(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    export_model(ExportConfig(trained, out))
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportCheckError, match="ONNX differs from torch"):
        export_model(ExportConfig(trained, out))
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_scale_option_divides_by_the_reference_std(trained: Path, tmp_path: Path) -> None:
    report = export_model(ExportConfig(trained, tmp_path / "m", scale_rewards=True))
    assert report.manifest.normalization.scale > 0
    assert report.manifest.normalization.scale != 1.0


def test_int8_without_held_out_data_is_an_error(families: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="needs held-out lists"):
        export_model(
            ExportConfig(
                families["bert"],
                tmp_path / "m",
                quantize="int8",
                reference=texts_file(tmp_path / "r.jsonl"),
            )
        )


def test_checkpoint_without_run_needs_a_reference(
    families: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="pass --reference"):
        export_model(ExportConfig(families["bert"], tmp_path / "m"))


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_a_model_too_big_for_one_protobuf_keeps_its_weights_in_one_data_file(
    families: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize: str
) -> None:
    """Over 2 GiB an ONNX model cannot be one protobuf: its weights go to model.onnx.data
    (checksummed, loaded from beside the graph). The limit is lowered here so a tiny model
    takes that path; torch's own one-file-per-tensor output is gathered the same way."""
    import training.onnx_files as onnx_files
    from training.onnx_files import external_files

    monkeypatch.setattr(onnx_files, "EXTERNAL_OVER", 1024)
    data = texts_file(tmp_path / "ref.jsonl")
    small = tmp_path / "small"
    export_model(ExportConfig(families["llama"], small, reference=data))
    out = tmp_path / "model"
    config = ExportConfig(families["llama"], out, quantize, reference=data, eval_file=data)  # type: ignore[arg-type]
    export_model(config)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json",
    ]  # fmt: skip
    manifest = load_manifest(out)  # both checksums verified
    assert sorted(manifest.files) == ["model.onnx", "model.onnx.data", "tokenizer.json"]
    assert external_files(out / "model.onnx") == [out / "model.onnx.data"]
    if quantize == "none":  # the same model as the one-file export, to the last bit
        texts = ["a short text", "a somewhat longer response text, with more words"]
        split = OnnxRewardModel.load(out).raw_scores([None, None], texts)
        whole = OnnxRewardModel.load(small).raw_scores([None, None], texts)
        np.testing.assert_array_equal(split, whole)


def test_torchs_per_tensor_files_are_gathered_into_one(tmp_path: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    from training.onnx_files import consolidate

    weights = [numpy_helper.from_array(np.full((64,), i, np.float32), f"w{i}") for i in range(3)]
    graph = helper.make_graph(
        [helper.make_node("Sum", ["x", "w0", "w1", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])], weights,
    )  # fmt: skip
    path = tmp_path / "raw.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)  # fmt: skip
    assert len(list(tmp_path.iterdir())) == 4  # the graph and a file per tensor
    assert consolidate(path) == [path]  # small: back in one file
    assert [p.name for p in tmp_path.iterdir()] == ["raw.onnx"]
    loaded = onnx.load(str(path))
    assert [float(numpy_helper.to_array(w)[0]) for w in loaded.graph.initializer] == [0, 1, 2]


def test_export_reads_the_data_as_the_run_did(tiny_backbone: Path, tmp_path: Path) -> None:
    """A run trained with skip_bad past a record with an empty response: its export reads
    the same files the same way (from the run's config.json), unless told otherwise."""
    from rankrm.cli import app
    from tests.rankrm.test_cli import runner
    from training.data import DataError

    data = separable_lists(tmp_path / "hh.jsonl", 32, seed=0)
    with data.open("a") as f:
        f.write(json.dumps({"responses": ["fine", ""]}) + "\n")  # line 33: an empty response
    config = train_config(
        tmp_path, tiny_backbone, train_file=data, dev_file=data, skip_bad=True, max_steps=2,
        eval_every=0,
    )  # fmt: skip
    best = train(config).best
    report = export_model(ExportConfig(best, tmp_path / "model"))
    assert report.manifest.normalization.reference == str(data)
    with pytest.raises(DataError, match=r"hh.jsonl:33: .*empty"):
        export_model(ExportConfig(best, tmp_path / "strict", skip_bad=False))
    result = runner.invoke(app, ["export", str(best), "--out", str(tmp_path / "m"), "--strict"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "hh.jsonl:33:" in message and "pass --skip-bad to skip such records" in message
    assert not (tmp_path / "m").exists() and not (tmp_path / "strict").exists()


def test_the_model_cards_command_reproduces_the_run() -> None:
    from training.config import train_command as _train_command

    run = {"train_file": "data/hh.jsonl", "out": "runs/hh", "skip_bad": True, "lr": 1e-4}
    assert _train_command(run).split(" \\\n    ") == [
        "rankrm train data/hh.jsonl", "--out runs/hh", "--skip-bad", "--lr 0.0001",
    ]  # fmt: skip
    typed = "rankrm train data/hh.jsonl --out runs/hh --skip-bad --lr 1e-4"
    assert _train_command({**run, "command": typed}) == typed  # as typed, when recorded
