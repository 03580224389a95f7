"""`mab simulate`: run the bandit simulator from the command line.

Registered by campaigns/cli.py as a typer command; everything heavy is imported
lazily so that `mab --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

ENVIRONMENTS = ("bernoulli", "factorial", "delayed", "drift")
POLICIES = ("uniform", "epsilon_greedy", "independent_ts", "hierarchical_ts", "structured_ts", "oracle")


def simulate(
    environment: str = typer.Option(
        "factorial", "--environment", "-e", help="bernoulli | factorial | delayed | drift"
    ),
    policies: str = typer.Option(
        "uniform,epsilon_greedy,independent_ts,structured_ts,oracle",
        "--policies",
        "-p",
        help="comma-separated: " + ", ".join(POLICIES),
    ),
    periods: int = typer.Option(10, "--periods", min=1, help="number of mailing periods (e.g. weeks)"),
    customers: int = typer.Option(
        1_200_000, "--customers", min=1, help="total customers over all periods and segments"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="customers per segment per period (overrides --customers)"
    ),
    segments: int = typer.Option(8, "--segments", min=1, help="segments (factorial environments)"),
    arms: int = typer.Option(10, "--arms", min=2, help="arms (bernoulli environment)"),
    objective: str = typer.Option("conversion", "--objective", help="click | conversion | revenue"),
    seed: int = typer.Option(0, "--seed", min=0),
    plot: Path | None = typer.Option(None, "--plot", help="write a regret plot (.png or .svg)"),
) -> None:
    """Simulate policies on a synthetic campaign and print regret and conversions."""
    from dataclasses import replace

    import numpy as np
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from bandit import Objective
    from bandit.simulate import bernoulli_environment, default_policies, factorial_environment
    from bandit.simulate import simulate as run_simulation

    console = Console()
    if environment not in ENVIRONMENTS:
        raise typer.BadParameter(f"unknown environment {environment!r}; choose from {ENVIRONMENTS}")
    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise typer.BadParameter(f"unknown policies {unknown}; choose from {POLICIES}")
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter("--plot must end in .png or .svg")
    try:
        obj = Objective(objective)
    except ValueError:
        raise typer.BadParameter(f"unknown objective {objective!r}") from None

    if environment == "bernoulli":
        rng = np.random.default_rng(seed)
        batch = batch_size or max(1, customers // periods)
        env = bernoulli_environment(rng.uniform(0.02, 0.05, arms), batch=batch)
    else:
        extra = {}
        if environment == "delayed":
            extra = {"delay_mean": 1.0, "window": 3}
        elif environment == "drift":
            extra = {"drift_sd": 0.1}
        env = factorial_environment(n_segments=segments, customers=customers, periods=periods, seed=seed, **extra)
        env = replace(env, objective=obj)
        if batch_size:
            env = replace(env, batch=batch_size)
    available = default_policies(env)
    missing = [p for p in names if p not in available]
    if missing:
        raise typer.BadParameter(f"policies {missing} need a factorial environment with several segments")
    chosen = {p: available[p] for p in names}

    with Progress(console=console) as progress:
        task = progress.add_task("simulating", total=len(chosen) * periods)
        result = run_simulation(env, chosen, periods, seed, on_period=lambda name, t: progress.advance(task))

    title = f"{env.name}: {env.n_segments} segment(s) x {env.n_arms} arms"
    title += f", {periods} periods x {env.batch:,} per segment"
    table = Table(title=title)
    for column in ("policy", "regret", "conversions", "share of oracle"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for row in result.summary():
        share = row["share_of_oracle"]
        share_text = "-" if share != share else f"{share:.1%}"
        table.add_row(row["policy"], f"{row['regret']:,.0f}", f"{row['conversions']:,.0f}", share_text)
    console.print(table)

    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(1, periods + 1)
        for name, regret in result.regret.items():
            if name != "oracle":
                ax.plot(x, regret, marker="o", label=name)
        ax.set_xlabel("period")
        ax.set_ylabel(f"cumulative regret ({env.objective.value}s lost)")
        ax.set_title(f"{env.name} environment, seed {seed}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot)
        plt.close(fig)
        console.print(f"regret plot written to {plot}")
