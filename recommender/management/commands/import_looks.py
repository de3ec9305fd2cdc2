from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from recommender.services.catalogue import entries_from_folder, entries_from_manifest, import_entries


class Command(BaseCommand):
    help = (
        "Imports looks from a folder in the original layout ({look}_{k}_part.jpg snapshots, {look}_{k}_reco.jpg "
        "items) or from a CSV manifest (look,role,path,style,category). Idempotent; unreadable files are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--manifest", type=Path, help="CSV with columns look,role,path,style,category")

    def handle(self, folder, manifest=None, **options):
        try:
            entries = entries_from_manifest(manifest, base=folder) if manifest else entries_from_folder(folder)
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(str(error))
        if not entries:
            raise CommandError(f"no images in the original layout found in {folder}")
        report = import_entries(entries, progress=options["verbosity"] > 0)
        for path, reason in report.skipped:
            self.stderr.write(f"skipped {path}: {reason}")
        self.stdout.write(report.summary())
