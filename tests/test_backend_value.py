"""The backend value: parsed once from its name, one manifest field, older two-field manifests still load."""

from __future__ import annotations

import json

import pytest

from rankwise.retrieval.backend.value import ONNX, ONNX_INT8, OPENVINO, OPENVINO_BF16, OPENVINO_INT8, TORCH, Backend
from rankwise.retrieval.errors import InputError
from rankwise.retrieval.options import Backend as BackendOption  # typer reads the annotations by name
from rankwise.retrieval.options import IndexBackend


@pytest.mark.parametrize("name, runtime, precision", [
    ("torch", "torch", "fp32"), ("onnx", "onnx", "fp32"), ("onnx-int8", "onnx", "int8"),
    ("openvino", "openvino", "fp32"), ("openvino-int8", "openvino", "int8"), ("openvino-bf16", "openvino", "bf16")])
def test_parse_gives_runtime_precision_and_the_name_back(name, runtime, precision):
    backend = Backend.parse(name)
    assert (backend.runtime, backend.precision, str(backend), backend.name) == (runtime, precision, name, name)
    assert (backend.int8, backend.bf16) == (precision == "int8", precision == "bf16")
    assert backend.exported == (runtime != "torch")
    assert Backend.parse(backend) is backend  # a parsed value passes as it is


def test_the_names_and_constants_are_the_same_six():
    assert Backend.NAMES == ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "openvino-bf16")
    assert [str(b) for b in (TORCH, ONNX, ONNX_INT8, OPENVINO, OPENVINO_INT8, OPENVINO_BF16)] == list(Backend.NAMES)
    assert Backend.parse(" onnx-int8 ") == ONNX_INT8 and hash(Backend.parse("onnx-int8")) == hash(ONNX_INT8)
    with pytest.raises(AttributeError):  # frozen
        ONNX.int8 = True  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["tf", "ONNX", "torch-int8", "int8", "", "onnx,int8", "onnx-bf16", "torch-bf16"])
def test_a_bad_name_names_the_field_and_the_choices(bad):
    with pytest.raises(InputError) as err:
        Backend.parse(bad, field="reranker")
    assert err.value.field == "reranker" and repr(bad) in str(err.value)
    assert "choose from torch, onnx, onnx-int8, openvino, openvino-int8, openvino-bf16" in str(err.value)


def test_torch_has_no_int8_variant_and_only_openvino_a_bf16_one():
    with pytest.raises(InputError, match="'torch-int8'") as err:
        Backend("torch", True)
    assert err.value.field == "backend"
    for runtime in ("torch", "onnx"):
        with pytest.raises(InputError, match=f"'{runtime}-bf16'"):
            Backend(runtime, bf16=True)
    with pytest.raises(InputError, match="unknown backend"):
        Backend("openvino", int8=True, bf16=True)


@pytest.mark.parametrize("record, name", [
    ({"backend": "onnx-int8"}, "onnx-int8"),  # one field
    ({"backend": "onnx", "int8": True}, "onnx-int8"),  # manifests written before: two fields
    ({"backend": "openvino", "int8": True}, "openvino-int8"),
    ({"backend": "onnx", "int8": False}, "onnx"),
    ({}, "torch"),
])
def test_from_record_reads_both_manifest_shapes(record, name):
    assert str(Backend.from_record(record)) == name


def test_from_record_refuses_an_unknown_backend():
    with pytest.raises(InputError, match="choose from") as err:
        Backend.from_record({"backend": "tensorrt"}, field="encoder.backend")
    assert err.value.field == "encoder.backend"


def test_an_index_stores_one_field_and_an_older_manifest_keeps_loading(tmp_path, synthetic_beir, tiny_encoder):
    """The index manifest's ``encoder.backend`` is the one name; rewritten to the older two-field shape
    (``"backend": "onnx"``, ``"int8": true``) the same index opens with the quantized encoder."""
    from rankwise.cli import main
    from rankwise.retrieval.manifest import MANIFEST
    from rankwise.retrieval.open import open_retriever

    out = tmp_path / "idx"
    try:
        main(["index", str(synthetic_beir), "--out", str(out), "--encoder", str(tiny_encoder), "--backend", "onnx-int8"])
    except SystemExit as done:
        assert not done.code
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["encoder"]["backend"] == "onnx-int8" and "int8" not in manifest["encoder"]
    query = {"q": "heart attack treatment"}
    expected = open_retriever(out).search(query, k=5, progress=False)
    assert open_retriever(out).encoder.backend == ONNX_INT8

    manifest["encoder"] = {**manifest["encoder"], "backend": "onnx", "int8": True}  # as written before
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    retriever = open_retriever(out)
    assert retriever.encoder.backend == ONNX_INT8
    assert retriever.search(query, k=5, progress=False).as_dict() == expected.as_dict()


def test_the_backend_option_hands_the_command_a_backend():
    """``--backend`` is parsed once, by the option: the command receives a Backend (None: an optional one unset)."""
    import typer
    from typer.testing import CliRunner

    seen = []
    app = typer.Typer()

    @app.command()
    def command(backend: BackendOption = "torch", index_backend: IndexBackend = None) -> None:
        seen.append((backend, index_backend))

    @app.command()
    def other() -> None:  # two commands: the first is invoked by name
        pass

    runner = CliRunner()
    assert runner.invoke(app, ["command", "--backend", "onnx-int8", "--index-backend", "openvino"]).exit_code == 0
    assert runner.invoke(app, ["command"]).exit_code == 0
    assert seen == [(ONNX_INT8, OPENVINO), (TORCH, None)]
    refused = runner.invoke(app, ["command", "--backend", "tf"])
    assert refused.exit_code == 2 and "'tf' is not one of" in refused.output and seen == [(ONNX_INT8, OPENVINO), (TORCH, None)]
