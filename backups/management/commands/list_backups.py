from backups.selectors import backup_list
from core.management.base import TenantCommand


class Command(TenantCommand):
    help = "Lista los backups de una clínica, del más reciente al más antiguo."

    def handle_tenant(self, tenant, **options):
        backups = list(backup_list())
        if not backups:
            self.stdout.write("  (sin backups)")
        for backup in backups:
            creator = backup.created_by.email if backup.created_by else "-"
            self.stdout.write(
                f"  {backup.pk:>6}  {backup.created_at:%Y-%m-%d %H:%M:%S}  {backup.status:<9}  {backup.backup_type:<9}  "
                f"{backup.file_size_mb:>9} MB  {'keep ' if backup.keep else ''}{backup.file_name}  ({creator})"
            )
