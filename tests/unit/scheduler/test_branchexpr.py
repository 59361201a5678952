"""conditionalBranches expressions: the subset Chaos Mesh's examples use, evaluated without eval,
and malformed input refused with a message instead of evaluated.
"""

from __future__ import annotations

import pytest

from chaosbus.scheduler.branchexpr import ExpressionError, evaluate


@pytest.mark.parametrize(
    ("expression", "exit_code", "stdout", "expected"),
    [
        ('stdout == "yes"', 0, "yes\n", True),
        ("stdout == 'yes'", 0, "no", False),
        ("exitCode == 0", 0, "", True),
        ("exitCode != 0", 0, "", False),
        ("exitCode > 1 && exitCode < 5", 3, "", True),
        ("exitCode >= 3 && exitCode <= 2", 3, "", False),
        ('exitCode == 1 || stdout == "ok"', 0, "ok", True),
        ('!(stdout == "ok")', 0, "ok", False),
        ('!(exitCode == 0) || (stdout != "a" && exitCode > -1)', 0, "b", True),
        ("true", 1, "", True),
        ('stdout == "say \\"hi\\""', 0, 'say "hi"', True),
    ],
)
def test_expressions(expression: str, exit_code: int, stdout: str, expected: bool) -> None:
    assert evaluate(expression, exit_code=exit_code, stdout=stdout) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("exitCode ==", "unexpected end"),
        ("exitCode == 0 0", "unexpected '0'"),
        ("__import__('os')", "unknown name '__import__'"),
        ("exitCode", "is not true or false"),
        ("stdout < 3", "cannot order"),
        ("(exitCode == 0", "unexpected end"),
        ("exitCode == 0; rm", "unexpected"),
        ("x" * 1001, "longer than"),
    ],
)
def test_malformed_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate(expression, exit_code=0, stdout="")


@pytest.mark.parametrize(
    ("expression", "stdout", "expected"),
    [
        ('exitCode == 0 and stdout == "yes"', "yes\n", True),
        ('exitCode != 0 or stdout == "yes"', "no", False),
        ('not (stdout == "no")', "yes", True),
        ('stdout contains "ready"', "service ready\n", True),
        ('stdout startsWith "branch-"', "branch-a", True),
        ('stdout endsWith "-b" && exitCode == 0', "branch-a", False),
    ],
)
def test_expr_word_operators_and_string_operators(expression: str, stdout: str, expected: bool) -> None:
    """expr (Chaos Mesh's expression language) also spells the logic as words and has string
    operators; expressions written that way pick the same branches here.
    """
    assert evaluate(expression, exit_code=0, stdout=stdout) is expected


@pytest.mark.parametrize("expression", ['exitCode contains "0"', "stdout == and", 'stdout matches "a.*"'])
def test_string_operators_need_strings_and_words_are_not_names(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, exit_code=0, stdout="a")
