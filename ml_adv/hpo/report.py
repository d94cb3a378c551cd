"""What a study writes in its run directory besides ``trials.jsonl``.

``best_config.json`` (the best configuration and its score), ``report.json`` (the study
header, summary and per-trial table), ``plots/best_so_far.png`` and
``plots/parallel_coordinates.png`` (and ``plots/pbt_lineage.png`` for PBT); all through
``RunDirectory`` so ``--fresh`` removes exactly these.
"""

from __future__ import annotations

from typing import Any


def study_report(result, header: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly report of a finished study."""
    table = [
        {
            k: t.get(k)
            for k in (
                "trial",
                "batch",
                "status",
                "score",
                "loss",
                "config",
                "metrics",
                "error",
                "seconds",
            )
        }
        for t in result.trials
    ]
    return {"study": header, **result.summary(), "trial_table": table}


def write_study_outputs(run_dir, result, header: dict[str, Any], space=None) -> dict[str, str]:
    """Write best_config.json, report.json and the two plots; return their paths."""
    from ml_adv.hpo.plots import plot_best_so_far, plot_parallel_coordinates
    from ml_adv.hpo.space import SearchSpace

    space = space or SearchSpace.from_dict(header["space"])
    objective = header["objective"]
    title = f"{header['method']} on {objective.get('data', objective.get('fn', ''))}"
    paths = {
        "best_config": str(
            run_dir.write_json(
                "best_config.json",
                {
                    "config": result.best_config,
                    "score": result.best_score,
                    "trial": result.best_trial,
                },
            )
        ),
        "best_so_far": plot_best_so_far(
            result.trials, run_dir.plot_path("best_so_far"), title=title
        ),
        "parallel_coordinates": plot_parallel_coordinates(
            result.trials, space, run_dir.plot_path("parallel_coordinates"), title=title
        ),
    }
    if "pbt" in result.details:  # lineage and the best member's schedule
        from ml_adv.hpo.plots import plot_pbt_lineage

        pbt = result.details["pbt"]
        paths["pbt_lineage"] = plot_pbt_lineage(
            pbt["intervals"],
            pbt["best_schedule"],
            space,
            run_dir.plot_path("pbt_lineage"),
            title=title,
        )
    paths["report"] = str(
        run_dir.write_report({**study_report(result, header), "artifacts": paths})
    )
    return paths
