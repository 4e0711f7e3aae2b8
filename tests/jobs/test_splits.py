import re

import numpy as np
import pytest

from jobs.splits import (check_disjoint, default_evals, parse_selector, parse_selector_list, select_fit_eval,
                         select_units, split_names)
from pipeline.errors import LayerprobeError

UNITS = ["train"] * 3 + ["dev"] * 10 + ["test"] * 2


def test_plain_split_name_selects_its_units_in_order():
    assert select_units(UNITS, "dev").tolist() == list(range(3, 13))


def test_percent_slices_partition_a_split_deterministically():
    head = select_units(UNITS, "dev[:80%]")
    tail = select_units(UNITS, "dev[80%:]")
    assert head.tolist() == list(range(3, 11))
    assert tail.tolist() == [11, 12]
    assert sorted(head.tolist() + tail.tolist()) == select_units(UNITS, "dev").tolist()


def test_absolute_and_negative_slices_follow_python_semantics():
    assert select_units(UNITS, "dev[2:4]").tolist() == [5, 6]
    assert select_units(UNITS, "dev[-2:]").tolist() == [11, 12]


def test_plus_concatenates_splits():
    assert select_units(UNITS, "train+test").tolist() == [0, 1, 2, 13, 14]


def test_unknown_split_error_lists_available_splits():
    with pytest.raises(LayerprobeError, match=r"unknown split 'validation'.*dev, test, train"):
        select_units(UNITS, "validation")


def test_a_missing_eval_split_says_what_to_pass_instead():
    from jobs.splits import check_eval_splits_exist

    dev_only = ["dev"] * 5
    with pytest.raises(LayerprobeError, match=r"no 'test' split to evaluate on; the store has: dev; "
                                              r"pass e\.g\. --fit 'dev\[:80%\]' --eval 'dev\[80%:\]'"):
        check_eval_splits_exist(dev_only, "dev", ["test"])
    with pytest.raises(LayerprobeError, match=r"the store has: dev, train; pass e\.g\. --eval train"):
        check_eval_splits_exist(["dev", "train"], "dev", ["test"])
    check_eval_splits_exist(dev_only, "dev[:80%]", ["dev[80%:]"])  # present: nothing to say
    check_eval_splits_exist(dev_only, "train", ["test"])  # the unknown fit split is select_units' to name


def test_store_without_split_column_accepts_all_only():
    assert select_units([None] * 4, "all[:50%]").tolist() == [0, 1]
    with pytest.raises(LayerprobeError, match="no split column"):
        select_units([None] * 4, "dev")


def test_bad_selectors_are_rejected():
    for bad in ["dev[:80]]", "dev[a:b]", "", "dev[:150%]"]:
        with pytest.raises(LayerprobeError):
            select_units(UNITS, bad)


def test_selector_list_splits_on_commas():
    assert parse_selector_list("dev, test[:50%]") == ["dev", "test[:50%]"]
    assert parse_selector("dev[:80%]")[0].stop == "80%"
    assert isinstance(select_units(UNITS, "dev"), np.ndarray)


def test_split_names_and_default_evals_go_by_parsed_names():
    assert split_names("train[:80%]+dev") == ["train", "dev"]
    assert default_evals(["train", "dev", "test", "extra"], "train[:80%]") == ["dev", "test", "extra"]
    assert default_evals(["train", "dev", "test"], "train+dev[50%:]") == ["test"]
    assert default_evals(["train", "dev"], "all[:50%]") == []


@pytest.mark.parametrize("fit, ev, shared", [
    ("dev", "dev", 10), ("dev[:80%]", "dev[50%:]", 3), ("all", "dev", 10), ("dev[:1]", "dev[:1]", 1),
    ("train+dev", "test,dev[-1:]", 1),
])
def test_overlapping_eval_is_refused_naming_both_selectors_and_the_count(fit, ev, shared):
    with pytest.raises(LayerprobeError) as e:
        check_disjoint(UNITS, fit, parse_selector_list(ev), unit="sentences")
    msg = str(e.value)
    assert f"shares {shared} of" in msg and f"fit selection {fit!r}" in msg and "sentences" in msg


def test_disjoint_selections_pass_and_are_returned():
    fit, (a, b) = select_fit_eval(UNITS, "dev[:80%]", ["dev[80%:]", "test"])
    assert fit.tolist() == list(range(3, 11)) and a.tolist() == [11, 12] and b.tolist() == [13, 14]
    check_disjoint([None] * 4, "all[:50%]", ["all[50%:]"])


def test_certain_overlaps_are_found_from_the_selectors_alone():
    from jobs.splits import certain_overlaps

    assert certain_overlaps("train[:80%]", ["train[80%:]", "dev", "train[:10]", "all[:50%]"]) == []
    assert certain_overlaps("train[:80%]", ["train[50%:]", "train", "all", "dev+train[-30%:]"]) == [
        "train[50%:]", "train", "all", "dev+train[-30%:]"]
    assert certain_overlaps("all", ["dev"]) == ["dev"]


def test_an_empty_fit_or_eval_selection_is_refused():
    from jobs.splits import check_disjoint

    units = ["dev"] * 10 + ["test"] * 5
    with pytest.raises(LayerprobeError, match=r"selection 'dev\[:0%\]' picks no pairs"):
        check_disjoint(units, "test", ["dev[:0%]"], unit="pairs")
    with pytest.raises(LayerprobeError, match=r"selection 'test\[5:\]' picks no pairs"):
        check_disjoint(units, "test[5:]", ["dev"], unit="pairs")


@pytest.mark.parametrize("sel, why", [
    ("train+train", "it names 'train' twice"),
    ("dev[:60%]+dev[40%:]", "its parts 'dev[:60%]' and 'dev[40%:]' overlap"),
    ("all+dev[:10%]", "its parts 'all' and 'dev[:10%]' overlap"),
    ("dev[2:4]+test+dev[2:4]", "it names 'dev[2:4]' twice"),
])
def test_a_selector_picking_units_twice_is_refused_when_parsed(sel, why):
    with pytest.raises(LayerprobeError, match=re.escape(f"split selector {sel!r} picks units twice ({why})")):
        parse_selector(sel)
    with pytest.raises(LayerprobeError, match="picks units twice"):
        select_units(UNITS, sel)


def test_a_selector_whose_unit_count_slices_overlap_is_refused_with_the_count():
    with pytest.raises(LayerprobeError, match=re.escape("split selector 'dev[:5]+dev[-7:]' picks 2 units twice "
                                                        "(its parts 'dev[:5]' and 'dev[-7:]' overlap)")):
        select_units(UNITS, "dev[:5]+dev[-7:]")


def test_disjoint_parts_of_one_split_are_still_joined():
    assert select_units(UNITS, "dev[:50%]+dev[50%:]").tolist() == list(range(3, 13))
    assert select_units(UNITS, "dev[:5]+dev[5:]").tolist() == list(range(3, 13))


@pytest.mark.parametrize("text, match", [("dev,dev", "'dev' twice"), ("dev, test ,dev", "'dev' twice"),
                                         ("dev,dev[:]", "'dev' and 'dev[:]', the same selection")])
def test_an_eval_list_naming_one_selection_twice_is_refused(text, match):
    with pytest.raises(LayerprobeError, match=re.escape(f"eval selections name {match}")):
        parse_selector_list(text)
    assert parse_selector_list("dev,dev[:50%]") == ["dev", "dev[:50%]"]   # a part of a split is another selection


def test_eval_selections_picking_the_same_units_are_refused_with_the_count():
    with pytest.raises(LayerprobeError, match=re.escape("eval selections name 'dev' and 'dev[0:100]', the same "
                                                        "selection (10 sentences)")):
        select_fit_eval(UNITS, "train", ["dev", "dev[0:100]"], unit="sentences")
    with pytest.raises(LayerprobeError, match="the same selection"):
        check_disjoint(UNITS, "train", ["dev[:100%]", "dev"])
