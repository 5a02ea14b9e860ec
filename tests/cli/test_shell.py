"""The shell's command layer (``Shell.execute``) against the embedded network, no terminal."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console

from cli._ops_values import FlowOutcome, ProgressSnapshot
from cli._repl_embedded import EmbeddedShellNetwork
from cli._shell import Shell
from cli._shell_view import render_progress
from fibers import FlowLogic, HospitalizeFlowException, startable_by_rpc, suspendable


@startable_by_rpc
class NeedsADoctor(FlowLogic[str]):
    """Asks to be hospitalised until ``cured``."""

    cured: ClassVar[bool] = False

    def __init__(self, patient: str) -> None:
        self.patient = patient

    @suspendable
    def call(self) -> str:
        if not NeedsADoctor.cured:
            raise HospitalizeFlowException(f"{self.patient} is unwell")
        return self.patient


class Harness:
    """A shell on BuyerBank of a prepared embedded network, writing to a string."""

    def __init__(self, network: EmbeddedShellNetwork, **options: Any) -> None:
        self.network = network
        self.out = io.StringIO()
        console = Console(file=self.out, width=200, color_system=None)
        self.shell = Shell(network.ops, console, current="BuyerBank", control=network,
                           pace=0.0, **options)

    def run(self, line: str) -> str:
        """Execute ``line``; return what it wrote."""
        self.out.seek(0)
        self.out.truncate()
        self.shell.execute(line)
        return self.out.getvalue()

    def start(self, line: str) -> str:
        """Run a ``flow start`` line; return the started flow's short id."""
        output = self.run(line)
        match = re.search(r"Started \w+ (\w{8})", output)
        assert match is not None, output
        return match.group(1)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[EmbeddedShellNetwork]:
    network = EmbeddedShellNetwork(tmp_path / "run")
    network.prepare()
    NeedsADoctor.cured = False
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def harness(network: EmbeddedShellNetwork) -> Harness:
    return Harness(network)


class PressAfter:
    """A terminal whose user presses a key after ``polls`` checks."""

    interactive = True

    def __init__(self, polls: int) -> None:
        self.polls = polls

    def watching(self) -> nullcontext[None]:
        return nullcontext()

    def pressed(self, timeout: float) -> bool:
        self.polls -= 1
        return self.polls < 0


# ----- flows -------------------------------------------------------------------------------------

def test_a_started_flow_is_followed_to_its_end(harness: Harness) -> None:
    output = harness.run("flow start CashPaymentFlow amount: 100 USD, recipient: SellerBank")
    assert re.search(r"Started CashPaymentFlow \w{8} \([0-9a-f-]{36}\)", output)
    assert "✓ Broadcasting the transaction to participants" in output
    assert re.search(r"✓ CashPaymentFlow \w{8} completed: SignedTransaction [0-9a-f]{64}",
                     output)
    harness.run("use SellerBank")
    assert re.search(r"100\.00 USD issued by BuyerBank \(ref 0[12]\) owned by SellerBank",
                     harness.run("vault"))


def test_a_failing_flow_shows_its_exception_type_and_message(harness: Harness) -> None:
    output = harness.run("flow start CashPaymentFlow amount: 5000 USD, recipient: SellerBank")
    assert re.search(r"✗ CashPaymentFlow \w{8} failed: InsufficientBalanceException: ", output)
    assert "Traceback" not in output


def test_bad_arguments_name_the_signature_and_the_shell_carries_on(harness: Harness) -> None:
    output = harness.run("flow start CashPaymentFlow amount: 10 USD")
    assert output == ("missing argument 'recipient': expected CashPaymentFlow(amount: Amount, "
                      "recipient: Party)\n")
    output = harness.run("flow start CashPaymentFlow amount: lots, recipient: SellerBank")
    assert output.startswith("argument 'amount': cannot parse 'lots' as an amount")
    assert "no flows running on BuyerBank" in harness.run("flow list")


def test_an_unknown_flow_suggests_the_closest(harness: Harness) -> None:
    output = harness.run("flow start CashPaymntFlow amount: 1 USD")
    assert output.startswith("no startable flow called 'CashPaymntFlow'; did you mean "
                             "CashPaymentFlow")


def test_flow_classes_lists_signatures(harness: Harness) -> None:
    output = harness.run("flow classes")
    assert "CashPaymentFlow(amount: Amount, recipient: Party)" in output
    assert "flow start CashPaymentFlow amount: <Amount>, recipient: <Party>" in output


def test_a_flow_stuck_on_a_crashed_node_is_listed_inspected_killed_and_watched(
    harness: Harness,
) -> None:
    assert "SellerBank crashed" in harness.run("crash SellerBank")
    stuck = harness.start("flow start CashPaymentFlow amount: 100 USD, recipient: SellerBank")
    doomed = harness.start("flow start CashPaymentFlow amount: 50 USD, recipient: SellerBank")
    listing = harness.run("flow list")
    assert stuck in listing and doomed in listing and "a message from SellerBank" in listing

    inspected = harness.run(f"flow inspect {stuck[:5]}")
    assert "waiting for: a message from SellerBank" in inspected
    assert "stack (outermost first)" in inspected
    assert "FinalityFlow.call  ledger._finality:" in inspected
    assert "stx = SignedTransaction(" in inspected
    # The flow objects on the stack show their fields, not "<unserialisable ...>".
    assert "self = CashPaymentFlow(amount=" in inspected and "recipient=" in inspected
    assert "self = FinalityFlow(" in inspected
    assert "unserialisable" not in inspected

    assert f"Killed CashPaymentFlow {doomed}" in harness.run(f"flow kill {doomed}")
    assert doomed not in harness.run("flow list")
    assert "is not running" in harness.run(f"flow kill {doomed}")

    assert "SellerBank restarted from its storage" in harness.run("restart SellerBank")
    watched = harness.run(f"flow watch {stuck}")
    assert re.search(rf"✓ CashPaymentFlow {stuck} completed: SignedTransaction", watched)


def test_watching_every_flow_ends_when_a_key_is_pressed(network: EmbeddedShellNetwork) -> None:
    harness = Harness(network)
    harness.run("crash SellerBank")
    stuck = harness.start("flow start CashPaymentFlow amount: 100 USD, recipient: SellerBank")
    harness.shell.keys = PressAfter(polls=3)
    output = harness.run("flow watch")
    assert f"CashPaymentFlow  {stuck}" in output
    # Finality has the recipient's node confirm its session before notarising anything.
    assert "▶ Verifying the transaction" in output
    assert "it keeps running; 'flow watch" in output


def test_watching_without_a_terminal_ends_when_nothing_can_move(harness: Harness) -> None:
    assert "no flows running" in harness.run("flow watch")


def test_an_abbreviated_run_id_must_be_unique_and_known(harness: Harness) -> None:
    assert harness.run("flow inspect ffff-nothing") == (
        "no flow on BuyerBank has a run id starting 'ffff-nothing'\n")
    assert harness.run("flow kill") == "usage: flow kill <id> (give one run id)\n"


def test_commercial_paper_is_sold_by_its_vault_reference(harness: Harness) -> None:
    harness.run("use SellerBank")
    vault = harness.run("vault CommercialPaper")
    match = re.search(r"([0-9a-f]{12})\(0\)\s+CommercialPaper.State", vault)
    assert match is not None, vault
    paper = f"{match.group(1)[:8]}(0)"
    refused = harness.run(f"flow start SellerStarter other_party: BuyerBank, "
                          f"asset_to_sell: {paper}, price: 900 USD, acceptable_issuers: [Notary]")
    assert "cash issued by BuyerBank, an issuer the seller does not accept" in refused, refused
    output = harness.run(f"flow start SellerStarter other_party: BuyerBank, asset_to_sell: "
                         f"{paper}, price: 900 USD, acceptable_issuers: [BuyerBank]")
    assert re.search(r"✓ SellerStarter \w{8} completed", output), output
    harness.run("use BuyerBank")
    assert "CommercialPaper.State" in harness.run("vault")


# ----- hospital, checkpoints ---------------------------------------------------------------------

def test_the_hospital_is_listed_retried_and_emptied(harness: Harness) -> None:
    assert harness.run("hospital") == "the hospital of BuyerBank is empty\n"
    first = harness.start("flow start NeedsADoctor patient: Ann")
    second = harness.start("flow start NeedsADoctor patient: Bob")
    listing = harness.run("hospital")
    assert "Ann is unwell" in listing and "Bob is unwell" in listing
    assert f"! NeedsADoctor {first} is in the hospital" in harness.run(f"hospital retry {first}")
    NeedsADoctor.cured = True
    assert "(its result was not observed)" in harness.run(f"hospital retry {first}")
    assert "Killed hospitalised flow" in harness.run(f"hospital kill {second}")
    assert harness.run("hospital") == "the hospital of BuyerBank is empty\n"
    assert harness.run("hospital cure x").startswith("unknown hospital command 'cure'")


def test_checkpoints_are_dumped_to_the_screen_or_a_file(harness: Harness,
                                                        tmp_path: Path) -> None:
    assert "BuyerBank has no checkpoints" in harness.run("checkpoints dump")
    harness.run("crash SellerBank")
    stuck = harness.start("flow start CashPaymentFlow amount: 1 USD, recipient: SellerBank")
    assert "1 checkpoint on BuyerBank" in harness.run("checkpoints dump")
    target = tmp_path / "dump.json"
    assert "Wrote 1 checkpoint(s)" in harness.run(f"checkpoints dump {target}")
    [entry] = json.loads(target.read_text())
    assert entry["run_id"].startswith(stuck)


# ----- ledger, network, node ---------------------------------------------------------------------

def test_the_vault_is_shown_whole_or_by_state_type(harness: Harness) -> None:
    output = harness.run("vault")
    assert output.count("1,000.00 USD issued by BuyerBank") == 2
    assert "the vault of BuyerBank holds no unconsumed CommercialPaper states" in harness.run(
        "vault CommercialPaper")
    assert harness.run("vault Csh").startswith("no state type called 'Csh'; did you mean Cash?")


def test_network_shows_parties_roles_and_which_nodes_are_down(harness: Harness) -> None:
    harness.run("crash SellerBank")
    rows = {line.split()[0]: line for line in harness.run("network").splitlines()
            if line.strip() and line.split()[0] in ("BuyerBank", "Notary", "SellerBank")}
    assert "this node" in rows["BuyerBank"] and rows["BuyerBank"].rstrip().endswith("up")
    assert "notary" in rows["Notary"]
    assert rows["SellerBank"].rstrip().endswith("down")


def test_node_shows_the_node_and_drains_it(harness: Harness) -> None:
    output = harness.run("node")
    assert "BuyerBank" in output and "2 Cash.State" in output
    assert "is draining" in harness.run("node drain on")
    refused = harness.run("flow start CashPaymentFlow amount: 1 USD, recipient: SellerBank")
    assert refused.startswith("FlowConfigurationError: node BuyerBank is draining")
    assert "accepts new flows again" in harness.run("node drain off")
    assert harness.run("node drain maybe") == "usage: node drain on|off\n"


def test_use_switches_node_and_a_crashed_node_says_how_to_bring_it_back(
    harness: Harness,
) -> None:
    assert harness.run("use sellerbank") == "now operating SellerBank\n"
    assert harness.shell.prompt == "SellerBank> "
    harness.run("crash SellerBank")
    assert harness.shell.prompt == "SellerBank (down)> "
    assert harness.run("vault") == ("node SellerBank is down: 'restart SellerBank' starts it "
                                    "again\n")
    assert harness.run("use Bnk") == ("unknown node 'Bnk' (nodes: Notary, SellerBank, "
                                      "BuyerBank)\n")


# ----- the shell itself --------------------------------------------------------------------------

def test_an_unknown_command_suggests_the_closest(harness: Harness) -> None:
    assert harness.run("flw list") == "unknown command 'flw'; did you mean 'flow'?\n"
    assert harness.run("xyzzy") == "unknown command 'xyzzy' ('help' lists the commands)\n"
    assert harness.run("flow strat X") == (
        "unknown flow command 'strat'; did you mean 'start'? (flow commands: list, classes, "
        "start, watch, inspect, kill)\n")


def test_help_lists_commands_and_explains_one(harness: Harness) -> None:
    output = harness.run("help")
    for usage in ("flow start <Flow> name: value, ...", "flow watch [id ...]",
                  "flow inspect <id>", "hospital retry <id>", "checkpoints dump [file]",
                  "vault [StateType]", "crash <node>", "help [command]", "exit"):
        assert usage in output
    assert "StateAndRef <tx hash>(<index>)" in harness.run("help flow")


def test_an_unexpected_error_is_one_line_or_a_traceback_in_debug_mode(
    network: EmbeddedShellNetwork, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise RuntimeError("the disk is on fire")

    for debug in (False, True):
        harness = Harness(network, debug=debug)
        monkeypatch.setattr(harness.shell.ops, "node_info", broken)
        output = harness.run("node")
        assert output.endswith("RuntimeError: the disk is on fire\n")
        assert ("Traceback" in output) is debug


def test_py_opens_a_python_prompt_with_ops_and_the_node_in_scope(
    network: EmbeddedShellNetwork,
) -> None:
    seen: dict[str, Any] = {}

    def interact(banner: str, scope: dict[str, Any]) -> None:
        seen.update(scope, banner=banner)
        scope["exit"]()  # leaves the prompt, not the shell

    harness = Harness(network, interact=interact, namespace=network.namespace)
    assert harness.run("py").endswith("back in the shell\n")
    assert seen["ops"] is network.ops["BuyerBank"]
    assert seen["node"] is network.net.node("BuyerBank")
    assert "Amount" in seen and "CashPaymentFlow" in seen
    assert "ops, node, net, shell" in seen["banner"]
    assert not harness.shell.finished


def test_exit_ends_the_shell(harness: Harness) -> None:
    assert harness.run("") == ""
    assert harness.run("# a comment") == ""
    harness.run("exit")
    assert harness.shell.finished


# ----- rendering ---------------------------------------------------------------------------------

def _render(snapshot: ProgressSnapshot) -> str:
    out = io.StringIO()
    Console(file=out, width=60, color_system=None).print(render_progress(snapshot))
    return out.getvalue()


STEPS = ((0, "Starting"), (0, "Generating"), (0, "Finalising"), (1, "Notarising"),
         (1, "Broadcasting"), (0, "Done"))


def test_progress_renders_done_current_nested_and_pending_steps() -> None:
    snapshot = ProgressSnapshot("r" * 36, "Pay", STEPS, 3)
    assert _render(snapshot) == (
        "✓ Generating\n"
        "▶ Finalising\n"
        "├── ▶ Notarising\n"
        "└──   Broadcasting\n")


def test_progress_renders_a_failure_on_the_current_step() -> None:
    outcome = FlowOutcome("r" * 36, "Pay", "FAILED", None, "NotaryException: conflict")
    snapshot = ProgressSnapshot("r" * 36, "Pay", STEPS, 3, outcome=outcome)
    assert _render(snapshot) == (
        "✓ Generating\n"
        "▶ Finalising\n"
        "├── ✗ Notarising — NotaryException: conflict\n"
        "└──   Broadcasting\n")


def test_progress_shows_starting_only_while_it_is_current() -> None:
    assert _render(ProgressSnapshot("r" * 36, "Pay", STEPS, 0)).startswith("▶ Starting\n")
    assert "Starting" not in _render(ProgressSnapshot("r" * 36, "Pay", STEPS, 1))
    assert "Done" not in _render(ProgressSnapshot("r" * 36, "Pay", STEPS, 5))
