"""Tests of gpicl_sklearn.checkpoint: round trips, resolution, and a clear error for every broken file."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CONFIG, tiny_model, write_tiny_checkpoint
from safetensors.torch import load_file, save_file

from gpicl_sklearn import CheckpointError, load_checkpoint, save_checkpoint
from gpicl_sklearn import checkpoint as checkpoint_module
from gpicl_sklearn.checkpoint import CONFIG_NAME, FORMAT_VERSION, MODEL_TYPE, WEIGHTS_NAME, atomic_write
from gpicl_sklearn.model import GPICLConfig


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, dtype: torch.dtype = torch.float32) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k].to(dtype).float(), sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip(tmp_path: Path, dtype: torch.dtype):
    model = tiny_model()
    out = save_checkpoint(
        model, tmp_path / "ckpt", preprocessing={"p": 1}, training={"steps": 3}, metrics={"acc": 0.5}, dtype=dtype
    )
    assert sorted(p.name for p in out.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert {t.dtype for t in load_file(out / WEIGHTS_NAME).values()} == {dtype}

    ckpt = load_checkpoint(out)
    assert_same_weights(model, ckpt.model, dtype)  # exact up to the storage precision
    assert ckpt.model.cfg == TINY_CONFIG
    assert not ckpt.model.training
    assert {p.dtype for p in ckpt.model.parameters()} == {torch.float32}
    assert {p.device.type for p in ckpt.model.parameters()} == {"cpu"}
    assert ckpt.config == {
        "format_version": FORMAT_VERSION,
        "model_type": MODEL_TYPE,
        "architecture": TINY_CONFIG.to_dict(),
        "weights_sha256": ckpt.sha256,
        "preprocessing": {"p": 1},
        "training": {"steps": 3},
        "metrics": {"acc": 0.5},
    }
    assert ckpt.sha256 == hashlib.sha256((out / WEIGHTS_NAME).read_bytes()).hexdigest()
    # Same function as the saved model (float32 storage: identical outputs).
    if dtype == torch.float32:
        x, y = torch.randn(2, 7, TINY_CONFIG.input_dim), torch.randint(0, TINY_CONFIG.num_classes, (2, 7))
        with torch.no_grad():
            torch.testing.assert_close(ckpt.model(x, y), model.eval()(x, y), rtol=0, atol=0)


def test_load_by_weights_path_and_model_card(tmp_path: Path):
    out = save_checkpoint(tiny_model(), tmp_path, preprocessing={}, training={}, metrics={}, model_card="# Card\n")
    assert (out / "README.md").read_text() == "# Card\n"
    assert load_checkpoint(str(out / WEIGHTS_NAME)).model.cfg == TINY_CONFIG
    # The generated card describes the model when none is given.
    out2 = save_checkpoint(tiny_model(), tmp_path / "b", preprocessing={}, training={"steps": 7}, metrics={})
    assert "2 layers" in (out2 / "README.md").read_text() and '"steps": 7' in (out2 / "README.md").read_text()


def test_bundled_checkpoints():
    default = load_checkpoint("default")  # the general-purpose model: tables, 1,023 context rows
    assert default.source == "default" and default.config["model_type"] == MODEL_TYPE
    assert default.config["preprocessing"]["layout"] == "slots"
    assert default.model.cfg.max_len == 1024 and default.model.cfg.input_dim == 128
    paper = load_checkpoint("paper-mnist")  # the paper's model, meta-trained on MNIST tasks
    assert paper.model.cfg == GPICLConfig()
    assert paper.config.get("preprocessing", {}).get("layout", "projection") == "projection"
    for ckpt in (default, paper):  # both carry the checksum that load verified
        assert ckpt.config["weights_sha256"] == ckpt.sha256


def test_loads_are_independent_and_rewrites_are_seen(tmp_path: Path):
    write_tiny_checkpoint(tmp_path, seed=0)
    a, b = load_checkpoint(tmp_path), load_checkpoint(tmp_path)
    with torch.no_grad():
        a.model.head.weight.add_(1.0)  # callers may modify their copy ...
    assert not torch.equal(a.model.head.weight, b.model.head.weight)  # ... without touching others
    assert_same_weights(tiny_model(0), load_checkpoint(tmp_path).model)

    shared = load_checkpoint(tmp_path, shared=True)
    assert load_checkpoint(tmp_path, shared=True).model is shared.model  # no copy, no rebuild
    assert shared.model is not load_checkpoint(tmp_path).model
    assert_same_weights(tiny_model(0), shared.model)  # a's modification did not reach the cache

    write_tiny_checkpoint(tmp_path, seed=1)  # rewritten in place: not served from the cache
    reloaded = load_checkpoint(tmp_path)
    assert reloaded.sha256 != a.sha256
    assert_same_weights(tiny_model(1), reloaded.model)
    assert_same_weights(tiny_model(1), load_checkpoint(tmp_path, shared=True).model)


def test_save_rejects_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="dtype"):
        save_checkpoint(tiny_model(), tmp_path, preprocessing={}, training={}, metrics={}, dtype=torch.int8)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(tiny_model(), tmp_path, preprocessing={"f": object()}, training={}, metrics={})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(tiny_model(), tmp_path, preprocessing={}, training={}, metrics={"loss": float("nan")})
    with pytest.raises(TypeError, match="needs a GPICLTransformer, got Sequential"):
        save_checkpoint(torch.nn.Sequential(tiny_model()), tmp_path, preprocessing={}, training={}, metrics={})
    assert not (tmp_path / CONFIG_NAME).exists()


@pytest.mark.parametrize("missing", [WEIGHTS_NAME, CONFIG_NAME])
def test_missing_file(tmp_path: Path, missing: str):
    write_tiny_checkpoint(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(CheckpointError, match=f"{missing}: checkpoint file is missing"):
        load_checkpoint(tmp_path)


def test_truncated_weights(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    data = (tmp_path / WEIGHTS_NAME).read_bytes()
    (tmp_path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path)


def test_corrupt_weights(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)


def test_weights_path_must_be_safetensors(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="expected a checkpoint folder or a .safetensors file"):
        load_checkpoint(tmp_path / CONFIG_NAME)


def test_bad_json(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    (tmp_path / CONFIG_NAME).write_text('{"format_version": 1,')
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(tmp_path)


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / CONFIG_NAME).read_text())
    config.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"format_version": None}, "format_version None is not supported"),
        ({"model_type": "bert"}, "model_type is 'bert', expected 'gpicl-transformer'"),
        ({"architecture": {"d_model": 32, "n_experts": 4}}, r"invalid 'architecture'.*n_experts"),
    ],
)
def test_incompatible_config(tmp_path: Path, changes: dict, message: str):
    write_tiny_checkpoint(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path)


ARCH = TINY_CONFIG.to_dict()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"architecture": {**ARCH, "d_model": "256"}},
            r"architecture.d_model must be a positive integer, got \"256\" \(str\)",
        ),
        (
            {"architecture": {**ARCH, "n_layers": 4.5}},
            r"architecture.n_layers must be a positive integer, got 4.5 \(float\)",
        ),
        (
            {"architecture": {**ARCH, "n_layers": 2.0}},
            r"architecture.n_layers must be a positive integer, got 2.0 \(float\)",
        ),
        ({"architecture": {**ARCH, "n_heads": -2}}, r"architecture.n_heads must be a positive integer, got -2 \(int\)"),
        ({"architecture": {**ARCH, "input_dim": 0}}, r"architecture.input_dim must be a positive integer, got 0"),
        (
            {"architecture": {**ARCH, "mlp_ratio": True}},
            r"architecture.mlp_ratio must be a positive integer, got true \(boolean\)",
        ),
        ({"architecture": {**ARCH, "head_dim": None}}, r"architecture.head_dim must be a positive integer, got null"),
        ({"architecture": {**ARCH, "qk_norm": 1}}, r"architecture.qk_norm must be true or false, got 1 \(int\)"),
        ({"architecture": {**ARCH, "max_len": 1}}, r"architecture.max_len must be at least 2"),
        ({"architecture": {**ARCH, "num_classes": 1}}, r"architecture.num_classes must be at least 2"),
        ({"architecture": [32, 2]}, r"architecture must be a JSON object, got \[32, 2\] \(list\)"),
        ({"architecture": None}, r"architecture must be a JSON object, got null"),
        ({"format_version": True}, "format_version True is not supported"),
        ({"format_version": 1.0}, "format_version 1.0 is not supported"),
        ({"preprocessing": "slots"}, r"preprocessing must be a JSON object, got \"slots\" \(str\)"),
        (
            {"preprocessing": {"layout": "columns"}},
            r"preprocessing.layout must be 'slots' or 'projection', got \"columns\"",
        ),
        ({"metrics": [0.5]}, r"metrics must be a JSON object"),
        ({"weights_sha256": "abc"}, r"weights_sha256 must be 64 lowercase hex digits, got 'abc'"),
        ({"weights_sha256": 12}, r"weights_sha256 must be 64 lowercase hex digits, got 12"),
    ],
)
def test_config_with_wrong_types_names_the_field(tmp_path: Path, changes: dict, message: str):
    write_tiny_checkpoint(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=f"config.json: {message}"):
        load_checkpoint(tmp_path)


def test_weights_changed_after_saving(tmp_path: Path):
    write_tiny_checkpoint(tmp_path / "a", seed=0)
    write_tiny_checkpoint(tmp_path / "b", seed=1)
    # Other valid weights of the same architecture: loading them would silently drift probabilities.
    (tmp_path / "a" / WEIGHTS_NAME).write_bytes((tmp_path / "b" / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match=r"model.safetensors: SHA-256 [0-9a-f]{64} differs from weights_sha256"):
        load_checkpoint(tmp_path / "a")
    # One weight edited in place.
    tensors = load_file(tmp_path / "b" / WEIGHTS_NAME)
    tensors["head.bias"][0] += 1e-3
    save_file(tensors, tmp_path / "b" / WEIGHTS_NAME, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="the weights changed after the checkpoint was saved"):
        load_checkpoint(tmp_path / "b")


def test_checkpoint_without_checksum_loads(tmp_path: Path):
    write_tiny_checkpoint(tmp_path, seed=2)
    drop_checksum(tmp_path)
    ckpt = load_checkpoint(tmp_path)
    assert "weights_sha256" not in ckpt.config
    assert_same_weights(tiny_model(2), ckpt.model)


def test_atomic_write(tmp_path: Path, monkeypatch):
    synced = []
    real_fsync = checkpoint_module.os.fsync
    monkeypatch.setattr(checkpoint_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    target = tmp_path / "f.txt"
    atomic_write(target, lambda path: path.write_text("one"))
    assert target.read_text() == "one"
    assert len(synced) == 2  # the file's contents, then the folder's entry (the rename)

    def fail(path: Path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "one"  # untouched, and no temporary file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_config_must_be_an_object(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load_checkpoint(tmp_path)


def test_wrong_tensor_shapes(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    edit_config(tmp_path, architecture={**TINY_CONFIG.to_dict(), "d_model": 64})  # weights are for 32
    with pytest.raises(
        CheckpointError,
        match=r"tensor shapes do not match config.json: .*embed_x.weight: \(32, 48\) instead of \(64, 48\)",
    ):
        load_checkpoint(tmp_path)


def test_config_far_larger_than_the_weights(tmp_path: Path):
    """An absurd size in config.json is refused before the model it describes is allocated."""
    write_tiny_checkpoint(tmp_path)
    edit_config(tmp_path, architecture={**TINY_CONFIG.to_dict(), "d_model": 10**9})
    with pytest.raises(CheckpointError, match=r"describes a model of about [\d,]+ parameters, but .* holds"):
        load_checkpoint(tmp_path)


def test_loading_leaves_the_random_stream_alone(tmp_path: Path):
    write_tiny_checkpoint(tmp_path, seed=6)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_checkpoint(tmp_path)  # builds (and randomly initialises) the architecture first
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def drop_checksum(folder: Path) -> None:
    """As a checkpoint saved before checksums were stored: its weights are checked, not compared."""
    config = json.loads((folder / CONFIG_NAME).read_text())
    del config["weights_sha256"]
    (folder / CONFIG_NAME).write_text(json.dumps(config))


def test_missing_and_extra_tensors(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    drop_checksum(tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_NAME)
    del tensors["head.bias"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match=r"missing: \['head.bias'\], unexpected: \['extra.weight'\]"):
        load_checkpoint(tmp_path)


def test_non_finite_or_integer_tensors(tmp_path: Path):
    write_tiny_checkpoint(tmp_path)
    drop_checksum(tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_NAME)
    tensors["head.bias"][0] = float("nan")
    save_file(tensors, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="head.bias contains NaN or infinity"):
        load_checkpoint(tmp_path)
    tensors["head.bias"] = torch.zeros(TINY_CONFIG.num_classes, dtype=torch.int64)
    save_file(tensors, tmp_path / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="head.bias has dtype torch.int64, expected floating point"):
        load_checkpoint(tmp_path)


def test_unresolvable_source(tmp_path: Path):
    with pytest.raises(
        CheckpointError, match="neither a bundled name .*, an existing folder or file, nor a Hugging Face Hub"
    ):
        load_checkpoint(tmp_path / "no" / "such" / "folder")


def test_revision_only_for_hub_ids(tiny_checkpoint: Path):
    with pytest.raises(ValueError, match="revision applies to Hub repository ids only"):
        load_checkpoint(tiny_checkpoint, revision="main")
    with pytest.raises(ValueError, match="revision applies to Hub repository ids only"):
        load_checkpoint("default", revision="main")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face cache in offline mode (the flag is read when huggingface_hub is imported)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_id_offline_and_not_cached(offline_hub: Path):
    with pytest.raises(
        CheckpointError,
        match=r"'someone/gpicl-model' is not a local folder and is not in the Hugging Face cache.*offline",
    ):
        load_checkpoint("someone/gpicl-model")


def cache_hub_checkpoint(cache: Path, seed: int) -> None:
    """'someone/gpicl-model' in a Hugging Face cache, laid out as huggingface_hub writes it:
    refs/<branch> names a snapshot folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--gpicl-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    write_tiny_checkpoint(repo / "snapshots" / commit, seed=seed)


def test_hub_id_served_from_cache_offline(offline_hub: Path):
    cache_hub_checkpoint(offline_hub, seed=3)
    ckpt = load_checkpoint("someone/gpicl-model")
    assert ckpt.source == "someone/gpicl-model"
    assert_same_weights(tiny_model(3), ckpt.model)
    with pytest.raises(CheckpointError, match="someone/gpicl-model@v2"):
        load_checkpoint("someone/gpicl-model", revision="v2")  # not cached


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face cache, not offline mode, and a Hub endpoint that refuses connections."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return cache


def test_unreachable_hub_fails_fast_and_says_how_to_work_offline(unreachable_hub: Path):
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"'someone/gpicl-test' is not a local folder.*cannot connect") as info:
        load_checkpoint("someone/gpicl-test")
    assert time.perf_counter() - start < 5  # huggingface_hub alone retries for about 24 s
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "hf download someone/gpicl-test --local-dir" in str(info.value)


def test_unreachable_hub_serves_the_cache(unreachable_hub: Path):
    cache_hub_checkpoint(unreachable_hub, seed=4)
    assert_same_weights(tiny_model(4), load_checkpoint("someone/gpicl-model").model)


def test_reachable_hub_downloads(tmp_path: Path, monkeypatch):
    """A Hub that accepts connections gets the ordinary download (with huggingface_hub's retries)."""
    import huggingface_hub
    import huggingface_hub.constants

    write_tiny_checkpoint(tmp_path / "snapshot", seed=5)
    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False):
        calls.append((repo_id, filename, revision, local_files_only))
        return str(tmp_path / "snapshot" / filename)

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        ckpt = load_checkpoint("someone/gpicl-model", revision="v1")
    assert_same_weights(tiny_model(5), ckpt.model)
    assert calls == [("someone/gpicl-model", n, "v1", False) for n in (CONFIG_NAME, WEIGHTS_NAME)]


def test_hub_probe_goes_through_the_proxy(monkeypatch):
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        # The Hub's own name need not resolve: requests go to the proxy.
        assert checkpoint_module._hub_unreachable("https://hub.invalid") is None
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    assert "cannot connect to 127.0.0.1" in checkpoint_module._hub_unreachable("https://hub.invalid")
