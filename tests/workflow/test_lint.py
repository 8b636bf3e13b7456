"""The BPMN lint: clean pathways pass, and each kind of problem is reported with its
stable code, the element it is about and the line it is on; publishing refuses a
document with problems once the lint is registered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from marshmallow import Schema, fields

from hms.audit import Actor
from hms.config import PROJECT_ROOT
from hms.errors import Invalid
from hms.workflow import lint, specs
from hms.workflow.lint import Problem, lint_file, lint_xml
from hms.workflow.operations import operation

# A folder of their own: the engine tests publish every fixtures/*.bpmn, and some of
# these are broken on purpose.
FIXTURES = Path(__file__).parent / "fixtures" / "lint"
FORMS_DIR = PROJECT_ROOT / "forms"


class OrderLabParams(Schema):
    patient_id = fields.Int(required=True)
    test_code = fields.Str(required=True)
    note = fields.Str()


@operation("linttest.order_lab", params=OrderLabParams)
def order_lab(ctx, params):
    """Order a lab test (a test double: the lint only reads its parameters)."""
    return {"order_id": 1}


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.bpmn").read_text(encoding="utf-8")


def mutate(xml: str, old: str, new: str) -> str:
    """Replace one exact snippet; fails loudly if the fixture no longer contains it."""
    assert xml.count(old) == 1, f"fixture snippet not found exactly once: {old!r}"
    return xml.replace(old, new)


@pytest.fixture(scope="module")
def forms():
    """The shipped forms when triage.json is there; otherwise just its key."""
    if (FORMS_DIR / "triage.json").exists():
        from hms.forms import FormRegistry

        return FormRegistry.from_directory(FORMS_DIR)
    return {"triage"}


def lint_clean(forms, old: str | None = None, new: str | None = None, **kwargs) -> list[Problem]:
    xml = fixture("lint_clean") if old is None else mutate(fixture("lint_clean"), old, new)
    return lint_xml(xml, "lint_clean", forms=forms, **kwargs)


def lint_features(forms, old: str | None = None, new: str | None = None, **kwargs) -> list[Problem]:
    xml = fixture("lint_features") if old is None else mutate(fixture("lint_features"), old, new)
    kwargs.setdefault("callee_xml", {"lint_callee": fixture("lint_callee")})
    return lint_xml(xml, "lint_features", forms=forms, **kwargs)


def only(problems: list[Problem], code: str, element_id: str | None) -> Problem:
    """The single problem found; it has the expected code, element and a line."""
    assert [(p.code, p.element_id) for p in problems] == [(code, element_id)], [str(p) for p in problems]
    problem = problems[0]
    assert isinstance(problem.line, int) and problem.line > 0
    assert problem.message
    return problem


# --- clean documents --------------------------------------------------------------------

def test_clean_pathway_has_no_problems(forms):
    assert lint_clean(forms) == []


@pytest.mark.parametrize("name", ["lint_loop_bounded", "lint_callee"])
def test_other_clean_fixtures_have_no_problems(forms, name):
    assert lint_xml(fixture(name), name, forms=forms) == []


def test_call_activity_script_loop_and_message_fixture_is_clean(forms):
    assert lint_features(forms) == []


def test_user_task_without_form_is_allowed(forms):
    assert lint_clean(forms, '<spiffworkflow:property name="formKey" value="triage" />', "") == []


def test_loop_through_a_timer_is_bounded(forms):
    xml = mutate(fixture("lint_loop"), """<bpmn:scriptTask id="count_up" name="Count one more">
      <bpmn:script>count = count + 1</bpmn:script>
    </bpmn:scriptTask>""", """<bpmn:intermediateCatchEvent id="count_up" name="An hour later">
      <bpmn:timerEventDefinition><bpmn:timeDuration>"PT1H"</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>""")
    assert lint_xml(xml, "lint_loop", forms=forms) == []


def test_lint_file_uses_the_file_stem_as_key(forms):
    assert lint_file(FIXTURES / "lint_clean.bpmn", forms=forms) == []
    problems = lint_file(FIXTURES / "lint_loop.bpmn", forms=forms)
    assert [p.code for p in problems] == ["unbounded_loop"]
    assert problems[0].file == str(FIXTURES / "lint_loop.bpmn")


def test_problem_renders_as_file_line_element_message():
    problem = Problem("plain_task", "Use a user task.", "triage", 12, "opd_visit.bpmn")
    assert str(problem) == "opd_visit.bpmn:12: triage: Use a user task."
    assert problem.as_dict() == {"code": "plain_task", "message": "Use a user task.", "element_id": "triage",
                                 "line": 12, "file": "opd_visit.bpmn"}


# --- 1. XML and the engine's parser -----------------------------------------------------

def test_not_xml(forms):
    problems = lint_xml("<definitions>\n  <process>\n</definitions>", "lint_clean", forms=forms)
    assert [p.code for p in problems] == ["not_xml"]
    assert problems[0].line == 3


def test_engine_rejection_is_reported_with_element_and_line(forms):
    problems = lint_clean(forms, 'isExecutable="true"', 'isExecutable="false"')
    problem = only(problems, "bpmn_invalid", "lint_clean")
    assert "not executable" in problem.message
    assert problem.line == 5


def test_engine_rejection_of_a_called_pathway_names_its_file(forms):
    broken_callee = mutate(fixture("lint_callee"), 'isExecutable="true"', 'isExecutable="false"')
    problems = lint_features(forms, callee_xml={"lint_callee": broken_callee})
    problem = only(problems, "bpmn_invalid", "lint_callee")
    assert problem.file == "lint_callee.bpmn"


# --- 2. key -----------------------------------------------------------------------------

def test_key_mismatch(forms):
    problems = lint_xml(fixture("lint_clean"), "opd_visit", forms=forms)
    problem = only(problems, "key_mismatch", "lint_clean")
    assert '"opd_visit"' in problem.message


# --- 3. lanes ---------------------------------------------------------------------------

def test_unknown_lane(forms):
    problem = only(lint_clean(forms, 'name="Nurse"', 'name="Night Sister"'), "unknown_lane", "lane_nurse")
    assert "Night Sister" in problem.message and "Nurse" in problem.message


def test_user_task_outside_any_lane(forms):
    problems = lint_clean(forms, "<bpmn:flowNodeRef>triage</bpmn:flowNodeRef>", "")
    assert "Triage" in only(problems, "no_lane", "triage").message


# --- 4. plain tasks ---------------------------------------------------------------------

def test_plain_task_is_refused(forms):
    xml = mutate(mutate(fixture("lint_clean"), '<bpmn:userTask id="triage"', '<bpmn:task id="triage"'),
                 "</bpmn:userTask>", "</bpmn:task>")
    problem = only(lint_xml(xml, "lint_clean", forms=forms), "plain_task", "triage")
    assert "use a user task (with a form) or a service task" in problem.message


# --- 5. forms ---------------------------------------------------------------------------

def test_unknown_form(forms):
    problems = lint_clean(forms, 'value="triage"', 'value="triag"')
    problem = only(problems, "unknown_form", "triage")
    assert '"triag"' in problem.message and "Did you mean: triage" in problem.message


def test_empty_form_key(forms):
    only(lint_clean(forms, 'name="formKey" value="triage"', 'name="formKey" value=""'), "missing_form", "triage")


# --- 6. service tasks -------------------------------------------------------------------

def test_unknown_operation(forms):
    problem = only(lint_clean(forms, 'id="linttest.order_lab"', 'id="linttest.order_labs"'),
                   "unknown_operation", "order_lab")
    assert "Did you mean: linttest.order_lab" in problem.message


def test_service_task_without_operation(forms):
    xml = re.sub(r"<spiffworkflow:serviceTaskOperator .*</spiffworkflow:serviceTaskOperator>", "",
                 fixture("lint_clean"), flags=re.S)
    # The engine's own "must have an operator" is the same finding: reported once.
    only(lint_xml(xml, "lint_clean", forms=forms), "unknown_operation", "order_lab")


@pytest.mark.parametrize("old, new, words", [
    ('<spiffworkflow:parameter id="test_code" type="str" value="&quot;CBC&quot;" />', "",
     'must give parameter "test_code"'),
    ('<spiffworkflow:parameter id="test_code" type="str" value="&quot;CBC&quot;" />',
     '<spiffworkflow:parameter id="test_code" type="str" value="&quot;CBC&quot;" />'
     '<spiffworkflow:parameter id="urgency" type="str" value="1" />', 'parameter "urgency"'),
    ('value="&quot;CBC&quot;"', 'value="full blood count"', "not a valid expression"),
    ('value="&quot;CBC&quot;"', 'value="__import__(&quot;os&quot;)"', "not a valid expression"),
], ids=["missing-required", "unknown", "not-compiling", "sandbox-refused"])
def test_bad_parameters(forms, old, new, words):
    problem = only(lint_clean(forms, old, new), "bad_parameters", "order_lab")
    assert words in problem.message


def test_parameter_named_like_an_element(forms):
    # SpiffWorkflow looks elements up by id across the file, so a parameter "triage" next to
    # a task "triage" breaks the diagram in a way its own message does not explain.
    problems = lint_clean(forms, '<spiffworkflow:parameter id="test_code" type="str" value="&quot;CBC&quot;" />',
                          '<spiffworkflow:parameter id="test_code" type="str" value="&quot;CBC&quot;" />'
                          '<spiffworkflow:parameter id="triage" type="any" value="1" />')
    named = [p for p in problems if p.code == "bad_parameters"]
    assert [p.element_id for p in named] == ["order_lab"] and "Rename the element" in named[0].message


# --- 7. scripts and conditions ----------------------------------------------------------

def test_script_task_that_does_not_compile(forms):
    problem = only(lint_features(forms, "reviews = reviews + 1", "reviews = reviews +"), "script_error", "init")
    # Reported at the script's second line, where the error is.
    lines = fixture("lint_features").splitlines()
    assert problem.line == 1 + next(i for i, line in enumerate(lines) if line.startswith("reviews = reviews + 1"))


def test_script_refused_by_the_sandbox(forms):
    problem = only(lint_features(forms, "notes = []", "import os"), "script_error", "init")
    assert "Prepare" in problem.message


def test_pre_script_that_does_not_compile(forms):
    problems = lint_features(forms, "<spiffworkflow:preScript>reviews = 0", "<spiffworkflow:preScript>reviews = (")
    assert "before" in only(problems, "script_error", "init").message


def test_post_script_that_does_not_compile(forms):
    problem = only(lint_clean(forms, "triaged = True", "triaged = ().__class__"), "script_error", "triage")
    assert "after" in problem.message


def test_empty_script_task(forms):
    only(lint_features(forms, "notes = []\nreviews = reviews + 1", ""), "script_error", "init")


def test_condition_that_does_not_compile(forms):
    problems = lint_clean(forms, 'acuity == "urgent"', 'acuity = "urgent"')
    only(problems, "condition_error", "flow_lab")


def test_missing_condition_on_a_non_default_gateway_flow(forms):
    problems = lint_clean(forms, 'default="flow_no_lab"', "")
    # The engine stops on the same flow; reported once, in our words.
    assert "default flow" in only(problems, "missing_condition", "flow_no_lab").message


# --- 8. timers --------------------------------------------------------------------------

@pytest.mark.parametrize("new, words", [
    ("<bpmn:timeDuration>PT1H</bpmn:timeDuration>", 'quote it: "PT1H"'),
    ('<bpmn:timeDuration>"PT1X"</bpmn:timeDuration>', "ISO-8601"),
    ('<bpmn:timeDuration>"PT1H" +</bpmn:timeDuration>', "not a valid expression"),
    ("<bpmn:timeDuration> </bpmn:timeDuration>", "empty"),
    ('<bpmn:timeDate>"tomorrow at nine"</bpmn:timeDate>', "ISO-8601"),
    ('<bpmn:timeDate>"PT1H"</bpmn:timeDate>', "duration timer"),
    ("<bpmn:timeCycle>R3/PT1H</bpmn:timeCycle>", 'quote it: "R3/PT1H"'),
    ('<bpmn:timeCycle>"PT1H"</bpmn:timeCycle>', '"R"'),
], ids=["unquoted", "bad-duration", "not-compiling", "empty", "bad-date", "date-is-duration",
        "unquoted-cycle", "cycle-without-R"])
def test_invalid_timer(forms, new, words):
    problem = only(lint_clean(forms, '<bpmn:timeDuration>"PT1H"</bpmn:timeDuration>', new),
                   "timer_invalid", "wait_hour")
    assert words in problem.message


@pytest.mark.parametrize("new", [
    '<bpmn:timeDate>"2030-01-31T09:00:00+05:00"</bpmn:timeDate>',
    '<bpmn:timeCycle>"R3/PT4H"</bpmn:timeCycle>',
    "<bpmn:timeDuration>follow_up_after</bpmn:timeDuration>",
])
def test_valid_timers(forms, new):
    assert lint_clean(forms, '<bpmn:timeDuration>"PT1H"</bpmn:timeDuration>', new) == []


# --- 9. loops ---------------------------------------------------------------------------

def test_automatic_back_edge_loop_is_refused(forms):
    problem = only(lint_xml(fixture("lint_loop"), "lint_loop", forms=forms), "unbounded_loop", "again_gw")
    assert "330" in problem.message and "count_up" in problem.message


def test_loop_through_a_subprocess_that_waits_is_bounded_and_inherits_its_lane(forms):
    assert lint_xml(fixture("lint_subprocess"), "lint_subprocess", forms=forms) == []


def test_loop_through_an_automatic_subprocess_is_refused(forms):
    xml = mutate(fixture("lint_subprocess"), '<bpmn:userTask id="check_patient" name="Check the patient" />',
                 '<bpmn:scriptTask id="check_patient"><bpmn:script>checked = True</bpmn:script></bpmn:scriptTask>')
    problem = only(lint_xml(xml, "lint_subprocess", forms=forms), "unbounded_loop", "again_gw")
    assert 'subprocess "Nursing round" (round)' in problem.message


def test_user_task_in_a_subprocess_outside_any_lane(forms):
    xml = mutate(fixture("lint_subprocess"), "<bpmn:flowNodeRef>round</bpmn:flowNodeRef>", "")
    only(lint_xml(xml, "lint_subprocess", forms=forms), "no_lane", "check_patient")


def test_standard_loop_without_maximum(forms):
    problems = lint_features(forms, ' loopMaximum="3"', "")
    assert "maximum" in only(problems, "loop_without_maximum", "review").message


def test_standard_loop_with_a_maximum_that_is_not_a_number(forms):
    # The engine's int() failure on the same task is reported once, in our words.
    only(lint_features(forms, 'loopMaximum="3"', 'loopMaximum="three"'), "loop_without_maximum", "review")


def test_loop_condition_that_does_not_compile(forms):
    only(lint_features(forms, "reviewed == True", "reviewed ==="), "condition_error", "review")


# --- 10. properties ---------------------------------------------------------------------

@pytest.mark.parametrize("old, new, words", [
    ('value="urgent"', 'value="5"', "1 to 4"),
    ('value="urgent"', 'value="=1 +"', "not valid"),
    ('value="PT30M"', 'value="30 minutes"', "ISO-8601"),
    ('value="PT30M"', 'value="=__import__(&quot;os&quot;)"', "not valid"),
], ids=["priority-out-of-range", "priority-expression", "due-in-text", "due-in-expression"])
def test_bad_properties(forms, old, new, words):
    assert words in only(lint_clean(forms, old, new), "properties", "triage").message


def test_property_expressions_and_names_are_accepted(forms):
    assert lint_clean(forms, 'value="PT30M"', 'value="=due_in_text"') == []
    assert lint_clean(forms, 'value="urgent"', 'value="2"') == []


# --- 11. call activities ----------------------------------------------------------------

def test_call_activity_to_an_unpublished_pathway(forms):
    problems = lint_features(forms, callee_xml={})
    # The engine's "process not found" is the same finding: reported once.
    problem = only(problems, "call_activity_unknown", "call_lab")
    assert '"lint_callee"' in problem.message


def test_call_activity_without_called_element(forms):
    only(lint_features(forms, ' calledElement="lint_callee"', ""), "call_activity_unknown", "call_lab")


# --- 12. messages -----------------------------------------------------------------------

def test_message_reference_that_does_not_resolve(forms):
    problem = only(lint_features(forms, 'messageRef="msg_result"', 'messageRef="msg_results"'),
                   "message_classes", "wait_result")
    assert '"msg_results"' in problem.message


def test_message_catch_event_without_message(forms):
    only(lint_features(forms, ' messageRef="msg_result"', ""), "message_classes", "wait_result")


# --- publishing -------------------------------------------------------------------------

@pytest.fixture
def registered_lint():
    previous = specs.get_linter()
    lint.register(FORMS_DIR)
    yield
    specs.set_linter(previous)


def test_publish_refuses_a_document_with_problems(session, registered_lint):
    with pytest.raises(Invalid) as caught:
        specs.publish(session, Actor.system("test"), "lint_loop", fixture("lint_loop"))
    assert caught.value.code == "lint_failed"
    problems = caught.value.fields["problems"]
    assert [(p["code"], p["element_id"]) for p in problems] == [("unbounded_loop", "again_gw")]
    assert problems[0]["line"] > 0
    assert specs.list_versions(session, "lint_loop") == []


def test_publish_resolves_call_activities_against_published_pathways(session, registered_lint):
    with pytest.raises(Invalid) as caught:
        specs.publish(session, Actor.system("test"), "lint_features", fixture("lint_features"))
    assert [p["code"] for p in caught.value.fields["problems"]] == ["call_activity_unknown"]

    specs.publish(session, Actor.system("test"), "lint_callee", fixture("lint_callee"))
    row = specs.publish(session, Actor.system("test"), "lint_features", fixture("lint_features"))
    assert (row.key, row.version) == ("lint_features", 1)


def test_publish_lint_refuses_when_the_forms_cannot_be_loaded(tmp_path):
    (tmp_path / "triage.json").write_text("{not json", encoding="utf-8")
    problems = lint.lint_for_publish(None, "lint_callee", fixture("lint_callee"), tmp_path)
    assert [p.code for p in problems] == ["forms_unreadable"]
    assert "triage" in problems[0].message
