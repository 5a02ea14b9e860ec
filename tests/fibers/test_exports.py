"""The public surface of `fibers` is exactly the names fixed by DESIGN.md section 2."""

import fibers
import fibers.testing


def test_fibers_exports_exactly_the_design_names() -> None:
    assert sorted(fibers.__all__) == sorted([
        "FlowLogic", "suspendable", "initiating_flow", "initiated_by", "startable_by_rpc",
        "schedulable_flow", "FlowException", "UnexpectedFlowEndException",
        "KilledFlowException", "HospitalizeFlowException", "NondeterminismError",
        "SuspendableError", "UntrustworthyData", "FlowInfo", "StateMachineRunId", "FlowHandle",
        "FlowProgressHandle", "ProgressTracker", "Step", "Party", "serializable",
        "SerializationError", "SerializeAsToken",
    ])
    for name in fibers.__all__:
        assert getattr(fibers, name) is not None


def test_testing_exports_mock_network() -> None:
    assert "MockNetwork" in fibers.testing.__all__
