"""The end-of-run summary that ``bayesncl-train`` prints."""
import math

from bayesncl_pyro.evaluation.glossary import UNDEFINED_WHEN
from bayesncl_pyro.training.summary import format_summary


def test_an_undefined_number_reads_not_defined_with_its_reason_and_an_unmeasured_one_a_dash():
    text = format_summary({"final_loss": math.nan, "open_rate": None, "semantic_consistency": math.nan,
                           "sparsity": 0.25})
    assert "nan" not in text

    def line(start: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(start))

    assert line("semantic consistency").endswith(f"not defined: {UNDEFINED_WHEN['semantic_consistency']}")
    assert line("final loss").endswith(f"not defined: {UNDEFINED_WHEN['final_loss']}")
    assert line("hard-gate open share").endswith(" -")
    assert line("sparsity").endswith(" 25.00")
