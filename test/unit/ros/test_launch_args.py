"""Launch arguments override the params files only when given."""

from __future__ import annotations

import pytest

from sole_r1_ros.ros.launch_args import explicit_parameters


def test_empty_arguments_leave_the_params_files_alone() -> None:
    assert explicit_parameters() == {}
    assert explicit_parameters(model_path="  ", use_sim_time="") == {}


def test_given_arguments_override() -> None:
    assert explicit_parameters(model_path="/models/SOLE-R1-8B", use_sim_time="True") == {
        "model.path": "/models/SOLE-R1-8B", "use_sim_time": True}
    assert explicit_parameters(use_sim_time="false") == {"use_sim_time": False}


def test_a_use_sim_time_that_is_no_boolean_is_refused() -> None:
    with pytest.raises(ValueError, match="use_sim_time"):
        explicit_parameters(use_sim_time="maybe")
