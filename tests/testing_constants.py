"""Constants shared by test modules (importable as ``testing_constants``; never import conftest)."""

from __future__ import annotations

#: The API token every test node accepts (at least 16 characters, as the settings require).
TEST_API_TOKEN = "test-token-0123456789abcdef"


def unaddressed_plan(pipeline: str = "ct-anatomy") -> dict[str, object]:
    """A stored result plan (JSON form) for a job planned without destinations, for store tests."""
    from node.study.plan import ResultPlanner
    from node.study.planning import mint_result_uids

    return ResultPlanner({}).plan(pipeline, (), mint_result_uids()).as_json()


def replan_unaddressed(job: object) -> tuple[dict[str, dict[str, str]], dict[str, object]]:
    """``JobActions``' re-run planner for store-level tests.

    New UIDs, a plan without destinations.
    """
    from node.study.plan import ResultPlanner
    from node.study.planning import mint_result_uids

    seed = mint_result_uids()
    return seed, ResultPlanner({}).plan(str(job.pipeline_name), (), seed).as_json()


def stored_plans(store: object) -> object:
    """``Egress``' ``plan_of`` for store-level tests: the plan stored with the job."""
    from node.study.plan import ResultPlan

    def plan_of(job_id: int) -> ResultPlan:
        job = store.job_row(job_id)  # type: ignore[attr-defined]
        return ResultPlan.from_json(job.plan)

    return plan_of
