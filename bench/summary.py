"""The benchmark's figures as the lines it prints (and the README quotes)."""

from __future__ import annotations


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _at_most(figure: dict) -> str:
    met = figure["ratio"] <= figure["goal"]
    return f"{figure['ratio']:.3f}x (goal <= {figure['goal']}x: {_verdict(met)})"


def summary_lines(results: dict) -> list[str]:
    """One line or a few per figure: both sides' medians and the median of their ratios."""
    figures = results["figures"]
    lines = [
        f"Benchmark ({results['mode']}, {results['repeats']} repeats; {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores): medians of ratios measured side by side",
    ]

    overhead = figures["pipeline_overhead"]
    lines.append(
        f"1. pipeline overhead: dvc repro from an empty cache {_seconds(overhead['measured'])} / "
        f"one plain process {_seconds(overhead['baseline'])} = {_at_most(overhead)}; "
        f"same metrics: {'yes' if overhead['same_metrics'] else 'NO'} "
        f"(test accuracy {overhead['pipeline_metrics']['accuracy']}, "
        f"loss {overhead['pipeline_metrics']['loss']})"
    )

    idle = figures["nothing_to_do"]
    lines.append(
        f"2. nothing to do: dvc repro {_seconds(idle['measured'])} / dvc version "
        f"{_seconds(idle['baseline'])} = {_at_most(idle)}"
    )

    change = figures["param_change"]
    lines.append(
        f"3. train-param change: dvc exp run {_seconds(change['measured'])} / "
        f"{' + '.join(change['stages_run'])} alone {_seconds(change['baseline'])} = "
        f"{_at_most(change)}; ran only {', '.join(change['stages_run'])}"
    )

    throughput = figures["training_throughput"]
    lines.append(
        "4. training throughput, train stage / one batch per call (steps_per_execution=1):"
    )
    for batch_size, goal in throughput["goal"].items():
        rates = throughput[batch_size]["samples_per_second"]
        lines.append(
            f"   batch {batch_size}: {rates['measured']:,.0f} / {rates['baseline']:,.0f} "
            f"samples/s = {rates['ratio']:.2f}x (goal >= {goal}x: "
            f"{_verdict(rates['ratio'] >= goal)})"
        )
    bound = throughput["matmul"]
    rates = bound["samples_per_second"]
    lines.append(
        f"   batch {bound['batch_size']}: {rates['measured']:,.0f} samples/s is "
        f"{rates['ratio']:.0%} of the matrix products alone ({rates['baseline']:,.0f} samples/s, "
        f"{bound['matmul_gigaflops']} GFLOP/s)"
    )

    lines.append("5. start-up, stage alone / python -c pass:")
    for stage, figure in figures["startup"]["stages"].items():
        lines.append(
            f"   {stage}: {_seconds(figure['measured'])} / {_seconds(figure['baseline'])} = "
            f"{figure['ratio']:.0f}x; imports tensorflow: "
            f"{'YES' if figure['imports_tensorflow'] else 'no'}"
        )

    memory = figures["peak_memory"]
    stages = ", ".join(
        f"{stage} {value:,.0f}" for stage, value in memory["stages_megabytes"].items()
    )
    lines.append(
        f"6. peak memory (MB): {stages} (goal < {memory['goal_megabytes']:,.0f} each: "
        f"{_verdict(memory['within_goal'])})"
    )

    lines.append("7. scaling, training on the training set repeated:")
    for row in figures["scaling"]["factors"]:
        extra = row["extra_peak_per_extra_image_byte"]
        lines.append(
            f"   {row['factor']}x ({row['images']:,} images, {row['image_megabytes']:,.0f} MB): "
            f"{row['samples_per_second']:,} samples/s ({row['throughput_relative_to_first']:.2f} "
            f"of 1x), peak {row['peak_megabytes']:,.0f} MB"
            + (f", {extra} bytes of peak per extra image byte" if extra is not None else "")
        )

    cached = figures["run_cache"]
    lines.append(
        f"8. run-cache, back to params that ran: {cached['ratio']:.3f}x of training them "
        f"({_seconds(cached['measured'])} / {_seconds(cached['baseline'])})"
    )
    return lines
