"""TensorRT bundles end to end on a CPU: `export --trt` writes what the runtime's runner reads, and
`Reranker.load` serves `engine: tensorrt` bundles through it.

TensorRT and the CUDA runtime are replaced by fakes in ``sys.modules`` that keep their Python API
(named I/O tensors, one optimisation profile, ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3``, ``cudaMalloc`` / ``cudaMemcpyAsync`` returning ``(error, value)`` tuples).
Fake device memory is real host memory, so the runner's copies in and out are exercised for real;
the fake engine computes its logits from the bytes it finds in its bound input buffers.
The ``gpu`` test at the end runs the same paths with the real libraries.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from models import minilm_path

from rrdistill.extras import MissingExtraError
from rrdistill.runtime import BundleError, Reranker
from rrdistill.runtime.bundle import InputSpec, Manifest, ModelSpec, load_manifest, write_manifest
from rrdistill.runtime.tensorrt import CONTRACT_KEY, PROVIDER, NoCudaDevice

VERSION = "11.4.0.106"
MAGIC = b"FAKE-TRT-PLAN\n"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


# -- a fake CUDA runtime (cuda.bindings.runtime) ----------------------------------------------


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeCudart(types.ModuleType):
    """Device memory is ctypes host memory; pointers are its addresses."""

    cudaError_t = CudaError
    cudaMemcpyKind = MemcpyKind

    def __init__(self, devices: int = 1):
        super().__init__("cuda.bindings.runtime")
        self.devices = devices
        self.memory: dict[int, ctypes.Array] = {}
        self.copies: list[tuple[str, int]] = []
        self.streams: set[int] = set()

    def cudaGetErrorString(self, error: CudaError) -> tuple[CudaError, bytes]:
        return CudaError.cudaSuccess, {100: b"no CUDA-capable device is detected"}.get(int(error), b"?")

    def cudaGetDeviceCount(self) -> tuple[CudaError, int | None]:
        if not self.devices:
            return CudaError.cudaErrorNoDevice, None
        return CudaError.cudaSuccess, self.devices

    def cudaSetDevice(self, device: int) -> tuple[CudaError]:
        return (CudaError.cudaSuccess if device < self.devices else CudaError.cudaErrorNoDevice,)

    def cudaGetDeviceProperties(self, device: int) -> tuple[CudaError, Any]:
        return CudaError.cudaSuccess, types.SimpleNamespace(name=b"Fake H200\0\0\0", major=9, minor=0)

    def cudaMalloc(self, size: int) -> tuple[CudaError, int]:
        block = ctypes.create_string_buffer(size)
        self.memory[ctypes.addressof(block)] = block
        return CudaError.cudaSuccess, ctypes.addressof(block)

    def cudaFree(self, pointer: int) -> tuple[CudaError]:
        del self.memory[pointer]
        return (CudaError.cudaSuccess,)

    def cudaStreamCreate(self) -> tuple[CudaError, int]:
        self.streams.add(len(self.streams) + 1)
        return CudaError.cudaSuccess, len(self.streams)

    def cudaStreamDestroy(self, stream: int) -> tuple[CudaError]:
        self.streams.remove(stream)
        return (CudaError.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[CudaError]:
        assert stream in self.streams
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: MemcpyKind, stream: int) -> tuple:
        device = dst if kind == MemcpyKind.cudaMemcpyHostToDevice else src
        block = next(b for p, b in self.memory.items() if p <= device < p + ctypes.sizeof(b))
        assert device + count <= ctypes.addressof(block) + ctypes.sizeof(block), "copy overruns the buffer"
        ctypes.memmove(dst, src, count)
        self.copies.append((kind.name, count))
        return (CudaError.cudaSuccess,)

    def read(self, pointer: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        ctypes.memmove(out.ctypes.data, pointer, out.nbytes)
        return out

    def write(self, pointer: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values)
        ctypes.memmove(pointer, values.ctypes.data, values.nbytes)


# -- a fake TensorRT ------------------------------------------------------------------------------


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT64 = "int64"
    BF16 = "bf16"


def plan_bytes(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A fake serialized engine: its I/O, profile and TensorRT version, then an optional ONNX model."""
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def numpy_logits(feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What the fake engine computes: independent of padding, different for every pair."""
    ids, mask = feeds["input_ids"].astype(np.float64), feeds["attention_mask"].astype(np.float64)
    types_ = feeds["token_type_ids"].astype(np.float64)
    return ((ids * mask).sum(1) * 1e-3 + mask.sum(1) * 0.5 - (types_ * mask).sum(1) * 0.25)[:, None]


class FakeEngine:
    def __init__(self, header: dict[str, Any], payload: bytes, cuda: FakeCudart, trt: FakeTensorRT):
        self.header, self.cuda, self.trt = header, cuda, trt
        self.io = [(n, "INPUT", d) for n, d in header["inputs"].items()]
        self.io += [(n, "OUTPUT", d) for n, d in header["outputs"].items()]
        self.num_io_tensors = len(self.io)
        self.num_optimization_profiles = 1
        if payload:
            import onnxruntime as ort

            session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
            self.compute: Callable[[dict[str, np.ndarray]], np.ndarray] = lambda feeds: session.run(
                None, {k: v.astype(np.int64) for k, v in feeds.items()}
            )[0]
        else:
            self.compute = numpy_logits

    def get_tensor_name(self, index: int) -> str:
        return self.io[index][0]

    def get_tensor_mode(self, name: str) -> str:
        return next(mode for n, mode, _ in self.io if n == name)

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType(next(d for n, _, d in self.io if n == name))

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, int]]:
        assert profile == 0 and name in self.header["inputs"]
        return [tuple(s) for s in self.header["profile"]]

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self.trt.contexts.append(context)
        return context


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.shapes: dict[str, tuple[int, int]] = {}
        self.addresses: dict[str, int] = {}
        self.executed: list[tuple[int, int]] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        (low, _, high) = self.engine.header["profile"]
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.header["inputs"]:
            return self.shapes.get(name, (-1, -1))
        batch = self.shapes.get(INPUTS[0], (-1, -1))[0]
        return (batch, 1)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert stream in self.engine.cuda.streams
        header = self.engine.header
        feeds = {
            name: self.engine.cuda.read(self.addresses[name], dtype, self.shapes[name])
            for name, dtype in header["inputs"].items()
        }
        assert len({f.shape for f in feeds.values()}) == 1
        self.executed.append(next(iter(feeds.values())).shape)
        ((output, dtype),) = header["outputs"].items()
        self.engine.cuda.write(self.addresses[output], self.engine.compute(feeds).astype(dtype))
        return True


class FakeTensorRT(types.ModuleType):
    """The slice of ``tensorrt`` that the runner and the builder use."""

    __version__ = VERSION
    DataType = DataType

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    class ILogger:
        class Severity(enum.Enum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class NetworkDefinitionCreationFlag:
        pass  # TensorRT 11: no STRONGLY_TYPED flag, strong typing is the only mode

    def __init__(self, cuda: FakeCudart):
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.cuda = cuda
        self.contexts: list[FakeContext] = []
        trt = self

        class Runtime:
            def __init__(self, logger: FakeTensorRT.ILogger):
                self.logger = logger

            def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
                if not plan.startswith(MAGIC):
                    self.logger.log(trt.ILogger.Severity.ERROR, "Serialization assertion failed: magic tag")
                    return None
                header_line, _, payload = plan[len(MAGIC) :].partition(b"\n")
                header = json.loads(header_line)
                if header["version"] != trt.__version__:
                    self.logger.log(
                        trt.ILogger.Severity.ERROR,
                        f"The engine plan file is not compatible with this version of TensorRT, "
                        f"expecting library version {trt.__version__} got {header['version']}",
                    )
                    return None
                return FakeEngine(header, payload, trt.cuda, trt)

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype: DataType) -> type:
        if dtype is DataType.BF16:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(dtype.value).type


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[FakeTensorRT, FakeCudart]]:
    """Install a fake ``tensorrt`` and ``cuda.bindings.runtime`` with `devices` GPUs."""

    def install(devices: int = 1) -> tuple[FakeTensorRT, FakeCudart]:
        cuda = FakeCudart(devices)
        trt = FakeTensorRT(cuda)
        for name in ("cuda", "cuda.bindings"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cuda)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt, cuda

    return install


# -- bundles ----------------------------------------------------------------------------------


def contract(
    max_batch: int = 4, max_length: int = 64, inputs: dict[str, str] | None = None
) -> dict[str, Any]:
    """The engine contract as export's own code writes it."""
    from rrdistill.export.tensorrt import ShapeProfile, engine_contract

    profile = ShapeProfile(max_length, opt_batch=2, max_batch=max_batch, opt_length=32)
    return engine_contract(
        VERSION,
        profile,
        inputs or dict.fromkeys(INPUTS, "int64"),
        {"logits": "float32"},
        {"name": "Fake H200", "compute_capability": "9.0"},
    )


def header_for(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The fake plan's header for an engine that really has `record`'s I/O and profile."""
    p = record["profile"]
    header = {
        "version": record["version"],
        "inputs": record["inputs"],
        "outputs": record["outputs"],
        "profile": [
            [p["min_batch"], p["min_length"]],
            [p["opt_batch"], p["opt_length"]],
            [p["max_batch"], p["max_length"]],
        ],
    }
    return {**header, **changes}


def trt_bundle(directory: Path, record: dict[str, Any], plan: bytes, max_length: int = 64) -> Path:
    """A bundle with ``engine: tensorrt`` written by the real bundle writer and export's manifest code."""
    from rrdistill.export.pipeline import with_engine

    directory.mkdir(parents=True)
    (directory / "tokenizer.json").write_bytes((minilm_path() / "tokenizer.json").read_bytes())
    (directory / "model.onnx").write_bytes(b"the source onnx (not read by the runner)")
    (directory / "model.plan").write_bytes(plan)
    manifest = Manifest(
        kind="cross-encoder",
        precision="fp32",
        model=ModelSpec(file="model.onnx", inputs=list(INPUTS), output="logits"),
        inputs=InputSpec(max_length=max_length),
        provenance={"source": {"path": "tiny"}},
    )
    write_manifest(directory, with_engine(manifest, record))
    return directory


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    record = contract()
    return trt_bundle(tmp_path / "trt", record, plan_bytes(header_for(record)))


def expected_scores(query: str, texts: list[str], max_length: int = 64) -> np.ndarray:
    """The fake engine's function on each pair alone, tokenized independently of the runtime."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to a fixed length; the fake engine counts every token
    tokenizer.enable_truncation(max_length, strategy="only_second")
    scores = []
    for text in texts:
        e = tokenizer.encode(query, text)
        feeds = {
            "input_ids": np.array([e.ids]),
            "attention_mask": np.ones((1, len(e.ids))),
            "token_type_ids": np.array([e.type_ids]),
        }
        scores.append(numpy_logits(feeds)[0, 0])
    return np.array(scores)


PASSAGES = [
    "Tides are caused by the gravitational pull of the moon and the sun on the oceans.",
    "Cats sleep a lot.",
    "The moon orbits the earth every 27 days.",
    "Ocean tides rise and fall twice a day along most coasts, driven by the moon.",
    "A recipe for bread.",
    "Spring tides happen when the sun and moon align.",
    "Neap tides are the weakest tides.",
    "Tidal forces also deform the solid earth slightly.",
    "Unrelated text about football.",
    "Tides.",
]


# -- (a) the dispatch: tensorrt bundles go to the TensorRT runner ----------------------------


def test_without_tensorrt_load_names_the_gpu_extra(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable, even where it is installed
    with pytest.raises(MissingExtraError, match=r"rrdistill\[gpu\]") as error:
        Reranker.load(bundle)
    assert "tensorrt" in str(error.value) and "runs ONNX bundles" not in str(error.value)


def test_an_unknown_engine_is_refused_with_the_engines_this_runtime_runs(tmp_path: Path) -> None:
    directory = tmp_path / "odd"
    directory.mkdir()
    (directory / "tokenizer.json").write_bytes((minilm_path() / "tokenizer.json").read_bytes())
    (directory / "model.xml").write_bytes(b"x")
    manifest = Manifest(kind="cross-encoder", precision="fp32", model=ModelSpec("model.xml", "openvino"))
    write_manifest(directory, manifest)
    with pytest.raises(
        BundleError, match=r"'openvino' is not one this runtime runs \(onnxruntime, tensorrt\)"
    ):
        Reranker.load(directory)


# -- (b) load fails clearly without a GPU ----------------------------------------------------


def test_without_a_cuda_gpu_load_says_so_and_points_at_the_onnx(bundle: Path, fakes: Callable) -> None:
    fakes(devices=0)
    with pytest.raises(NoCudaDevice) as error:
        Reranker.load(bundle)
    message = str(error.value)
    assert "no CUDA GPU was found" in message and "cudaErrorNoDevice" in message
    assert "source ONNX (model.onnx) can be served on CPU by exporting without --trt" in message
    assert isinstance(error.value, BundleError)


def test_the_real_cuda_binding_without_a_gpu_gives_the_same_error(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where cuda-bindings is installed on a machine without a usable GPU: its real answer, not a fake's."""
    cudart = pytest.importorskip("cuda.bindings.runtime")
    if cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaSuccess:
        pytest.skip("this machine has a CUDA device")
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(FakeCudart()))
    with pytest.raises(NoCudaDevice, match=r"no CUDA GPU was found \(cudaError"):
        Reranker.load(bundle)


def test_without_the_cuda_binding_load_names_the_gpu_extra(
    bundle: Path, fakes: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes()
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"cuda-python.*rrdistill\[gpu\]"):
        Reranker.load(bundle)


# -- (c) the runner end to end through Reranker.load(...).rerank(...) --------------------------


def test_rerank_through_the_engine_matches_the_engine_and_splits_big_batches(
    bundle: Path, fakes: Callable
) -> None:
    trt, cuda = fakes()
    reranker = Reranker.load(bundle)
    assert reranker.providers == [PROVIDER]
    (context,) = trt.contexts
    assert context.executed == [(1, context.executed[0][1])]  # the warm-up pair
    query = "what causes ocean tides?"
    results = reranker.rerank(query, PASSAGES, batch_size=32)

    expected = expected_scores(query, PASSAGES)
    got = np.array([r.score for r in sorted(results, key=lambda r: r.index)])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert [r.index for r in results] == sorted(range(len(PASSAGES)), key=lambda i: (-expected[i], i))
    # one runtime batch of 10 pairs, split into the profile's max batch of 4
    assert [shape[0] for shape in context.executed[1:]] == [4, 4, 2]
    widths = [shape[1] for shape in context.executed[1:]]
    assert widths == sorted(widths) and max(widths) <= 64
    # inputs in, logits out: 3 host→device copies and 1 device→host copy per engine call
    # (the warm-up's and the 3 chunks')
    kinds = [kind for kind, _ in cuda.copies]
    assert kinds.count("cudaMemcpyHostToDevice") == 3 * 4 and kinds.count("cudaMemcpyDeviceToHost") == 4
    assert reranker.stats.batches == 1 and reranker.stats.pairs == len(PASSAGES)

    many = reranker.rerank_many([(query, PASSAGES[:3]), ("cats", PASSAGES)], top_k=2)
    assert [len(r) for r in many] == [2, 2]
    reranker.session.close()
    assert cuda.memory == {} and cuda.streams == set()  # buffers and stream released


def test_int32_engines_get_int32_inputs(tmp_path: Path, fakes: Callable) -> None:
    """Input dtypes are the engine's (an engine built from an int32 graph), checked against the manifest."""
    record = contract(inputs=dict.fromkeys(INPUTS, "int32"))
    bundle = trt_bundle(tmp_path / "b", record, plan_bytes(header_for(record)))
    fakes()
    reranker = Reranker.load(bundle)
    got = np.array([r.score for r in sorted(reranker.rerank("tides", PASSAGES[:5]), key=lambda r: r.index)])
    np.testing.assert_allclose(got, expected_scores("tides", PASSAGES[:5]), rtol=1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"inputs": {"input_ids": "int64", "attention_mask": "int64"}},
            r"engine inputs .* differ from the manifest",
        ),
        ({"outputs": {"scores": "float32"}}, r"engine outputs \['scores'\] lack 'logits'"),
        (
            {"inputs": dict.fromkeys(INPUTS, "int32")},
            r"input_ids is int32 in the engine, int64 in the manifest",
        ),
        ({"outputs": {"logits": "bf16"}}, r"output logits is bf16"),
        (
            {"profile": [[1, 1], [2, 32], [8, 64]]},
            r"engine profile differs from the manifest's: \{'max_batch': \(4, 8\)\}",
        ),
    ],
)
def test_an_engine_that_does_not_match_its_manifest_is_refused_at_load(
    tmp_path: Path, fakes: Callable, changes: dict, message: str
) -> None:
    record = contract()
    bundle = trt_bundle(tmp_path / "b", record, plan_bytes(header_for(record, **changes)))
    fakes()
    with pytest.raises(BundleError, match=message):
        Reranker.load(bundle)


def test_an_engine_shorter_than_the_bundles_max_length_is_refused(tmp_path: Path, fakes: Callable) -> None:
    record = contract(max_length=48)
    bundle = trt_bundle(tmp_path / "b", record, plan_bytes(header_for(record)), max_length=64)
    fakes()
    with pytest.raises(BundleError, match=r"at most 48 tokens per pair but the bundle's max_length is 64"):
        Reranker.load(bundle)


def test_an_engine_from_another_tensorrt_names_both_versions_and_gpus(
    tmp_path: Path, fakes: Callable
) -> None:
    record = {**contract(), "version": "10.9.0.34", "device": {"name": "A100", "compute_capability": "8.0"}}
    bundle = trt_bundle(tmp_path / "b", record, plan_bytes(header_for(record)))
    fakes()
    with pytest.raises(BundleError) as error:
        Reranker.load(bundle)
    message = str(error.value)
    assert "built with TensorRT 10.9.0.34 on A100 (compute capability 8.0)" in message
    assert f"this machine has TensorRT {VERSION} on Fake H200 (compute capability 9.0)" in message
    assert "expecting library version" in message  # TensorRT's own reason, from its log
    assert "model.onnx" in message and "without --trt" in message


def test_shapes_outside_the_profile_are_refused_not_sent(bundle: Path, fakes: Callable) -> None:
    fakes()
    session = Reranker.load(bundle, warmup=False).session
    feeds = {name: np.zeros((2, 65), dtype=np.int64) for name in INPUTS}
    with pytest.raises(ValueError, match=r"length 65 is outside the engine's profile \[1, 64\]"):
        session.run(["logits"], feeds)
    (out,) = session.run(["logits"], {name: np.ones((9, 3), dtype=np.int64) for name in INPUTS})
    assert out.shape == (9, 1) and out.dtype == np.float32


# -- (d) export --trt writes exactly what the runner reads ----------------------------------------


class FakeBuilder:
    """``trt.Builder`` over the ONNX file: the network's I/O are the graph's, the plan carries the profile."""

    def __init__(self, logger: Any):
        self.built: dict[str, Any] = {}

    def create_network(self, flags: int) -> Any:
        assert flags == 0  # TensorRT 11: strongly typed is the only mode
        return types.SimpleNamespace(tensors=None)

    def create_builder_config(self) -> Any:
        config = types.SimpleNamespace(profiles=[], pools={})
        config.set_memory_pool_limit = lambda pool, size: config.pools.__setitem__(pool, size)
        config.add_optimization_profile = config.profiles.append
        return config

    def create_optimization_profile(self) -> Any:
        profile = types.SimpleNamespace(shapes={})
        profile.set_shape = lambda name, low, opt, high: profile.shapes.__setitem__(name, (low, opt, high))
        return profile

    def build_serialized_network(self, network: Any, config: Any) -> bytes:
        (profile,) = config.profiles
        (shapes,) = {tuple(map(tuple, s)) for s in profile.shapes.values()}
        header = {
            "version": VERSION,
            "inputs": {t.name: t.dtype.value for t in network.inputs},
            "outputs": {t.name: t.dtype.value for t in network.outputs},
            "profile": [list(s) for s in shapes],
        }
        return plan_bytes(header, network.onnx)


class FakeParser:
    def __init__(self, network: Any, logger: Any):
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path: str) -> bool:
        import onnx

        graph = onnx.load(path).graph
        elem = {onnx.TensorProto.INT64: DataType.INT64, onnx.TensorProto.FLOAT: DataType.FLOAT}
        tensor = lambda v: types.SimpleNamespace(name=v.name, dtype=elem[v.type.tensor_type.elem_type])  # noqa: E731
        n = self.network
        n.inputs, n.outputs = [tensor(v) for v in graph.input], [tensor(v) for v in graph.output]
        n.num_inputs, n.num_outputs = len(n.inputs), len(n.outputs)
        n.get_input, n.get_output = n.inputs.__getitem__, n.outputs.__getitem__
        n.onnx = Path(path).read_bytes()
        return True


def test_export_trt_writes_what_the_runner_reads(
    tiny_checkpoint: Path, tmp_path: Path, fakes: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export --trt` with TensorRT's build API faked over onnxruntime: the real build_engine, manifest
    and parity code run, and the runtime serves the bundle through the runner."""
    from models import small_parity

    from rrdistill.export.pipeline import ExportConfig, export_bundle

    trt, _ = fakes()
    trt.Builder, trt.OnnxParser = FakeBuilder, FakeParser
    trt.Logger = lambda level: None
    trt.Logger.WARNING = "warning"  # type: ignore[attr-defined]
    monkeypatch.setattr("rrdistill.export.tensorrt._cuda_available", lambda: True)

    config = ExportConfig(precision="fp32", max_length=96, trt=True, parity=small_parity())
    result = export_bundle(tiny_checkpoint, tmp_path / "trt", config)
    manifest = load_manifest(result.bundle)

    assert (manifest.model.engine, manifest.model.file, manifest.model.onnx_file) == (
        "tensorrt",
        "model.plan",
        "model.onnx",
    )
    assert sorted(manifest.files) == ["model.onnx", "model.plan", "tokenizer.json"]
    record = manifest.extra[CONTRACT_KEY]
    assert record["inputs"] == dict.fromkeys(manifest.model.inputs, "int64")
    assert record["outputs"] == {manifest.model.output: "float32"}
    # opt_length is clamped to max_length: the profile recorded is the one the engine was built with
    assert record["profile"] == {
        "min_batch": 1,
        "opt_batch": 32,
        "max_batch": 64,
        "min_length": 1,
        "opt_length": 96,
        "max_length": 96,
    }
    assert manifest.provenance["tensorrt"] == {
        "version": VERSION,
        "device": {"name": "Fake H200", "compute_capability": "9.0"},
    }
    assert manifest.providers_validated == [PROVIDER]
    # the engine (here: the ONNX on onnxruntime behind TensorRT's API) passes fp32 parity
    assert manifest.parity["passed"] and manifest.parity["max_abs_diff"] < 1e-3
    assert manifest.parity["engine_vs_onnx"]["max_abs_diff"] < 1e-5
    assert manifest.parity["engine_vs_onnx"]["pairs"] == manifest.parity["pairs"]

    served = Reranker.load(result.bundle)
    onnx_served = _onnx_twin(result.bundle, tmp_path / "onnx")
    query = "tidal forces and the moon"
    got = {r.index: r.score for r in served.rerank(query, PASSAGES)}
    want = {r.index: r.score for r in onnx_served.rerank(query, PASSAGES)}
    assert got.keys() == want.keys() and max(abs(got[i] - want[i]) for i in got) < 1e-5


def _onnx_twin(bundle: Path, directory: Path) -> Reranker:
    """The ONNX the engine was built from, as an onnxruntime bundle."""
    import shutil

    directory.mkdir()
    manifest = load_manifest(bundle)
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copyfile(bundle / name, directory / name)
    manifest.model = ModelSpec(file="model.onnx", inputs=manifest.model.inputs, output=manifest.model.output)
    manifest.extra.pop(CONTRACT_KEY)
    write_manifest(directory, manifest)
    return Reranker.load(directory, providers=["CPUExecutionProvider"])


# -- the lean runtime stays lean ---------------------------------------------------------------


def test_importing_the_runtime_and_its_tensorrt_runner_imports_nothing_heavy() -> None:
    code = (
        "import sys, json, rrdistill.runtime, rrdistill.runtime.tensorrt; "
        "print(json.dumps([m for m in ('tensorrt', 'cuda', 'torch', 'transformers') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# -- on a GPU with TensorRT ---------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_real_engine_serves_like_its_onnx(tiny_checkpoint: Path, tmp_path: Path, precision: str) -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda.bindings.runtime")
    from models import onnx_bundle_from_checkpoint

    bundle = onnx_bundle_from_checkpoint(tiny_checkpoint, tmp_path / "trt", precision=precision, trt=True)
    manifest = load_manifest(bundle)
    assert manifest.model.engine == "tensorrt" and manifest.providers_validated == [PROVIDER]
    assert manifest.parity["passed"], manifest.parity["violations"]
    bound = 1e-4 if precision == "fp32" else 5e-2
    assert manifest.parity["engine_vs_onnx"]["max_abs_diff"] < bound
    served = Reranker.load(bundle)
    onnx_served = _onnx_twin(bundle, tmp_path / "onnx")
    query = "tidal forces and the moon"
    got = {r.index: r.score for r in served.rerank(query, PASSAGES * 10, batch_size=100)}  # > max batch
    want = {r.index: r.score for r in onnx_served.rerank(query, PASSAGES * 10)}
    assert max(abs(got[i] - want[i]) for i in got) < bound
