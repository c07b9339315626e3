"""How the taxonomy commands print an import: counts first, then every problem as path:line [field] message."""

from curation.models import TaxonomyImport
from curation.services.imports import ImportPlan, remove_all_refusal


def problem_line(problem: dict) -> str:
    where = problem.get("path") or "(source)"
    if problem.get("line"):
        where = f"{where}:{problem['line']}"
    field = f" [{problem['field']}]" if problem.get("field") else ""
    return f"{where}{field} {problem.get('message', '')}"


def write_plan(command, plan: ImportPlan) -> None:
    out = command.stdout
    out.write(
        f"Dry run of {plan.source}, nothing changed: {plan.files_seen} files read; leaves {len(plan.created)} "
        f"would be created, {len(plan.updated)} updated, {plan.unchanged} unchanged, {len(plan.removed)} removed; "
        f"{plan.rejected} files rejected."
    )
    if plan.removes_every_leaf:
        out.write(command.style.WARNING(remove_all_refusal(plan)))
    if plan.removed:
        out.write(command.style.WARNING(f"Would remove ({len(plan.removed)}):"))
        for path in plan.removed:
            out.write(f"  {path}/qna.yaml")
    _write_problems(command, plan.problems, plan.rejected)


def write_import(command, record: TaxonomyImport) -> None:
    out = command.stdout
    if record.status == TaxonomyImport.Status.REFUSED:
        out.write(f"Import of {record.source} refused; nothing was changed.")
        return
    style = command.style.SUCCESS if record.status == TaxonomyImport.Status.SUCCEEDED else command.style.ERROR
    out.write(
        style(
            f"Imported {record.source} in {record.duration_ms / 1000:.1f} s: {record.files_seen} files read; "
            f"leaves {record.created} created, {record.updated} updated, {record.unchanged} unchanged, "
            f"{record.removed} removed; {record.rejected} files rejected."
        )
    )
    _write_problems(command, record.problems, record.rejected)


def _write_problems(command, problems: list[dict], rejected: int) -> None:
    out = command.stdout
    errors = [p for p in problems if p.get("level", "error") == "error"]
    warnings = [p for p in problems if p.get("level") == "warning"]
    if errors:
        out.write(command.style.WARNING(f"Rejected files ({rejected}), each kept out of the import:"))
        for problem in errors:
            out.write(f"  {problem_line(problem)}")
    if warnings:
        out.write(f"Warnings ({len(warnings)}):")
        for problem in warnings:
            out.write(f"  {problem_line(problem)}")
