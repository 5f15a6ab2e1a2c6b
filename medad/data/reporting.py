"""Human-readable text for ``medad datasets check``."""

from __future__ import annotations

from typing import Any


def format_check(report: dict[str, Any]) -> str:
    """Render a :func:`medad.data.check_dataset` report as plain text (counts, classes, problems)."""
    lines = [
        f"dataset {report['root']}: kind {report['kind']}, variant {report['variant']}, split {report['split']}",
        f"images: {report['total']} (normal {report['normal']}, abnormal {report['abnormal']}, "
        f"unknown {report['unknown']})",
    ]
    for name, counts in report["classes"].items():
        lines.append(f"  {name}: {counts['total']} (normal {counts['normal']}, abnormal {counts['abnormal']})")
    problems = report["problems"]
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines.extend(f"  {p['path']}: {p['message']}" for p in problems)
    else:
        lines.append("no problems found")
    if "files" in report:
        lines.append(f"sha256 of {len(report['files'])} image(s) and their masks (sha256sum format):")
        for item in report["files"]:
            lines.append(f"{item['sha256']}  {item['image_path']}")
            if item["mask_path"]:
                lines.append(f"{item['mask_sha256']}  {item['mask_path']}")
    return "\n".join(lines)
