"""How the taxonomy commands print an import: counts first, then every problem as path:line [field] message."""

from curation.models import TaxonomyImport


def problem_line(problem: dict) -> str:
    where = problem.get("path") or "(source)"
    if problem.get("line"):
        where = f"{where}:{problem['line']}"
    field = f" [{problem['field']}]" if problem.get("field") else ""
    return f"{where}{field} {problem.get('message', '')}"


def write_import(command, record: TaxonomyImport) -> None:
    out = command.stdout
    if record.status == TaxonomyImport.Status.REFUSED:
        out.write(f"Import of {record.source} refused; nothing was changed.")
        return
    out.write(
        command.style.SUCCESS(
            f"Imported {record.source} in {record.duration_ms / 1000:.1f} s: {record.files_seen} files read; "
            f"leaves {record.created} created, {record.updated} updated, {record.unchanged} unchanged, "
            f"{record.removed} removed; {record.rejected} files rejected."
        )
    )
    errors = [p for p in record.problems if p.get("level", "error") == "error"]
    warnings = [p for p in record.problems if p.get("level") == "warning"]
    if errors:
        out.write(command.style.WARNING(f"Rejected files ({record.rejected}), each kept out of the import:"))
        for problem in errors:
            out.write(f"  {problem_line(problem)}")
    if warnings:
        out.write(f"Warnings ({len(warnings)}):")
        for problem in warnings:
            out.write(f"  {problem_line(problem)}")
