"""The public surface of `fibers`: the names fixed by DESIGN.md section 2, the node and its
errors, and the seams (transport, runtime, storage) another implementation plugs into."""

import fibers
import fibers.progress_view
import fibers.runtime
import fibers.services
import fibers.storage
import fibers.testing
import fibers.transport
import fibers.wire


def test_fibers_exports_exactly_the_design_names_and_the_node() -> None:
    assert sorted(fibers.__all__) == sorted([
        "FlowLogic", "suspendable", "initiating_flow", "initiated_by", "startable_by_rpc",
        "schedulable_flow", "FlowException", "UnexpectedFlowEndException",
        "KilledFlowException", "HospitalizeFlowException", "NondeterminismError",
        "SuspendableError", "UntrustworthyData", "FlowInfo", "StateMachineRunId", "FlowHandle",
        "FlowProgressHandle", "ProgressTracker", "Step", "Party", "serializable",
        "SerializationError", "SerializeAsToken",
        # the node, what it is built from, and the errors its users meet
        "Node", "NodeInfo", "NodeIdentity", "NetworkMap", "FlowConfigurationError",
        "is_startable_by_rpc",
        "ReceiveTimeoutException",  # receive(..., deadline=): added for the ledger (issue 15)
    ])
    for name in fibers.__all__:
        assert getattr(fibers, name) is not None


def test_the_seams_export_exactly_their_interfaces() -> None:
    assert sorted(fibers.transport.__all__) == [
        "Deliver", "InFlightMessage", "InMemoryNetwork", "InMemoryTransport", "Transport"]
    assert sorted(fibers.runtime.__all__) == ["ManualDriver", "NodeRuntime", "NodeStoppedError"]
    assert sorted(fibers.storage.__all__) == [
        "CorruptRecordError", "ENGINE_DB_WRITERS", "FaultPlan", "InjectedStorageFault",
        "NodeStorage", "SECRET_ENV", "SECRET_FILE_ENV", "SnapshotLocals", "Storage",
        "TamperedDatabaseError", "Txn", "WriteGroup", "check_snapshot_locals",
        "stored_identity"]
    assert sorted(fibers.progress_view.__all__) == [
        "FlowTreesView", "STATIC_MARKER", "describe_error", "render_tracker", "summary_line"]
    # what node services are written with (the ledger's among them), and the wire codec
    assert sorted(fibers.services.__all__) == [
        "NodeService", "SerializeAsToken", "ServiceHub", "Stream", "journaled",
        "wake_on_restart"]
    assert sorted(fibers.wire.__all__) == [
        "decode", "encode", "encoded_fields", "encoded_items", "encoded_once",
        "whitelisted_name"]
    for module in (fibers.transport, fibers.runtime, fibers.storage, fibers.progress_view,
                   fibers.services, fibers.wire):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_testing_exports_mock_network() -> None:
    assert "MockNetwork" in fibers.testing.__all__
