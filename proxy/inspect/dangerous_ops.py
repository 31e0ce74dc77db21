"""Ops a distributed-TF server should not run for a remote caller, by category.

Data for the policy: each `Category` names its ops and says in one line why. The
categories with `deny_by_default` form `DEFAULT_DENYLIST`; the others are advisory:
ordinary programs need them (every variable is a VarHandleOp, tf.zeros is a Fill), so
they are bounded by limits or by attrs, not refused by name. An allowlist remains the
stronger policy: these names come from the TF 2.21 op registry (tests check each exists
there), and a new TF version may add ops that belong here. Every op below also counts
when it appears inside a function body, a func-valued attr or an eager operation: the
inspector reports all of those as `OpUse`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    reason: str
    ops: frozenset[str]
    deny_by_default: bool = True


def _ops(text: str) -> frozenset[str]:
    return frozenset(text.split())


CATEGORIES: tuple[Category, ...] = (
    Category("file-io", "reads, writes, lists or deletes files the caller names on the server",
             _ops("""
        ReadFile WriteFile MatchingFiles Save SaveSlices SaveV2 Restore RestoreSlice RestoreV2
        MergeV2Checkpoints DTensorRestoreV2 LoadAndRemapMatrix GenerateVocabRemapping
        InitializeTableFromTextFile InitializeTableFromTextFileV2 FixedUnigramCandidateSampler
        RecordInput FileSystemSetConfiguration DecodeProtoV2 EncodeProto
        WholeFileReader WholeFileReaderV2 TextLineReader TextLineReaderV2
        FixedLengthRecordReader FixedLengthRecordReaderV2 TFRecordReader TFRecordReaderV2
        LMDBReader ReaderRead ReaderReadV2 ReaderReadUpTo ReaderReadUpToV2
        ReaderRestoreState ReaderRestoreStateV2
        TFRecordDataset TFRecordDatasetV2 TextLineDataset FixedLengthRecordDataset
        FixedLengthRecordDatasetV2 CSVDataset CSVDatasetV2 ExperimentalCSVDataset SqlDataset
        ExperimentalSqlDataset LMDBDataset ExperimentalLMDBDataset SaveDataset SaveDatasetV2
        LoadDataset SnapshotDataset SnapshotDatasetV2 SnapshotDatasetReader
        SnapshotNestedDatasetReader SnapshotChunkDataset ListSnapshotChunksDataset CacheDataset
        CacheDatasetV2 DatasetToTFRecord ExperimentalDatasetToTFRecord MatchingFilesDataset
        ExperimentalMatchingFilesDataset""")),
    Category("summary-writers", "write event files or SQLite databases at caller-chosen paths",
             _ops("""
        CreateSummaryFileWriter CreateSummaryDbWriter SummaryWriter WriteSummary
        WriteScalarSummary WriteHistogramSummary WriteImageSummary WriteAudioSummary
        WriteGraphSummary WriteRawProtoSummary ImportEvent FlushSummaryWriter CloseSummaryWriter
        StatsAggregatorSetSummaryWriter""")),
    Category("immutable-const", "memory-maps the file its memory_region_name attr names "
             "(CVE-2021-41227, CVE-2021-29539)", _ops("ImmutableConst")),
    Category("print", "PrintV2 appends to any file:// output_stream; both flood the server log",
             _ops("Print PrintV2")),
    Category("debug-ops", "their debug_urls write file:// dumps or dial grpc:// listeners",
             _ops("""
        DebugIdentity DebugIdentityV2 DebugIdentityV3 DebugNanCount DebugNumericSummary
        DebugNumericSummaryV2 Copy CopyHost""")),
    Category("python", "call Python functions of the server process by token "
             "(CVE-2022-41908)", _ops("PyFunc PyFuncStateless EagerPyFunc")),
    Category("foreign-code", "run code that is not a TF graph: serialized StableHLO, custom "
             "calls, compiled XLA or TPU programs", _ops("""
        XlaCallModule XlaCustomCall XlaCustomCallV2 XlaLaunch XlaLaunchV2 _XlaCompile _XlaRun
        TPUExecute TPUExecuteAndUpdateVariables TPUPartitionedCall TPUCompile _TPUCompileMlir
        ConfigureDistributedTPU ShutdownDistributedTPU MlirPassthroughOp
        _XlaHostComputeMlir""")),
    Category("code-in-data", "runs a GraphDef carried in a string tensor, whose ops no "
             "inspection of the request can see", _ops("DatasetFromGraph")),
    Category("rpc", "start gRPC servers or call arbitrary addresses from inside the graph",
             _ops("RpcServer RpcClient RpcCall RpcServerStart RpcServerRegister")),
    Category("data-service", "dial a tf.data service dispatcher at a caller-chosen address",
             _ops("""
        DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3 DataServiceDatasetV4
        RegisterDataset RegisterDatasetV2 DistributedSave""")),
    Category("remote-call", "run a function on, or send to, another device or task of the "
             "cluster", _ops("RemoteCall XlaSend XlaRecv")),
    Category("collectives", "contact peer tasks and can block forever waiting for them",
             _ops("""
        CollectiveReduce CollectiveReduceV2 CollectiveReduceV3 CollectiveGather
        CollectiveGatherV2 CollectiveBcastSend CollectiveBcastSendV2 CollectiveBcastRecv
        CollectiveBcastRecvV2 CollectiveAllToAllV2 CollectiveAllToAllV3
        CollectiveReduceScatterV2 CollectiveInitializeCommunicator CollectiveAssignGroupV2""")),
    Category("process-control", "aborts the server process", _ops("Abort")),
    Category("session-tensors", "keep tensors in the session across steps, by handle "
             "(CVE-2020-15204)", _ops(
        "GetSessionHandle GetSessionHandleV2 GetSessionTensor DeleteSessionTensor")),
    Category("sleep", "hold server threads for a caller-chosen time",
             _ops("SleepDataset ExperimentalSleepDataset")),
    # Advisory: legitimate in ordinary programs, dangerous only with some attrs or inputs.
    Category("rendezvous", "move tensors between devices by rendezvous key; legitimate in "
             "partitioned graphs (RegisterGraph) and multi-device functions", _ops(
        "Send Recv _Send _Recv _HostSend _HostRecv"), deny_by_default=False),
    Category("shared-resources", "a shared_name or container attr shares the resource with "
             "every other session and tenant of the server", _ops("""
        VarHandleOp VariableV2 HashTable HashTableV2 MutableHashTable MutableHashTableV2
        MutableHashTableOfTensors MutableHashTableOfTensorsV2 MutableDenseHashTable
        MutableDenseHashTableV2 FIFOQueue FIFOQueueV2 PaddingFIFOQueue PaddingFIFOQueueV2
        PriorityQueue PriorityQueueV2 RandomShuffleQueue RandomShuffleQueueV2 Stack StackV2
        TensorArrayV3 Barrier ConditionalAccumulator SparseConditionalAccumulator MapStage
        OrderedMapStage Stage DestroyResourceOp"""), deny_by_default=False),
    Category("runtime-allocation", "allocate memory sized by runtime tensor values, "
             "which no check of the request can bound", _ops("""
        Tile Fill BroadcastTo Empty Range LinSpace OneHot Pad PadV2 MirrorPad ScatterNd
        SparseToDense UnsortedSegmentSum UnsortedSegmentMax UnsortedSegmentMin
        UnsortedSegmentProd Bincount DenseBincount SparseBincount Multinomial RandomUniform
        RandomStandardNormal TruncatedNormal RandomUniformInt ParameterizedTruncatedNormal
        StatelessRandomUniform StatelessRandomNormal StatelessTruncatedNormal
        StatelessRandomUniformInt MatrixDiagV2 MatrixDiagV3 MatrixDiagPartV2 MatrixDiagPartV3
        ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea ScaleAndTranslate
        ExtractGlimpse ExtractGlimpseV2 Conv2DBackpropInput Conv3DBackpropInputV2
        TensorListReserve EmptyTensorList RepeatDataset StringNGrams DecodeCompressed DecodePng
        DecodeJpeg DecodeGif DecodeImage DecodeRaw ParseExample ParseExampleV2"""),
             deny_by_default=False),
    Category("unbounded-loops", "loop for as long as a runtime condition holds; bound "
             "with RunOptions.timeout_in_ms", _ops("While StatelessWhile For"),
             deny_by_default=False),
)

DEFAULT_DENYLIST: frozenset[str] = frozenset().union(
    *(c.ops for c in CATEGORIES if c.deny_by_default))
ALL_LISTED: frozenset[str] = frozenset().union(*(c.ops for c in CATEGORIES))
_BY_OP: dict[str, tuple[Category, ...]] = {
    op: tuple(c for c in CATEGORIES if op in c.ops) for op in ALL_LISTED}


def categories_of(op: str) -> tuple[Category, ...]:
    """The categories `op` is listed in (empty for ops not listed)."""
    return _BY_OP.get(op, ())
