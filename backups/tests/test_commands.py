import pytest
from django.core.management import CommandError, call_command

from backups.models import BackupRecord
from bitacora.models import Bitacora


def test_create_all_tenants_automatic_then_list_download_verify_delete(tenants, backups_dir, tmp_path, capsys):
    # when the cron job's command runs
    call_command("create_backup", "--all-tenants", "--type", "automatic")
    # then each clinic has an automatic backup without creator
    from django_tenants.utils import schema_context

    with schema_context("test_b"):
        backup_b = BackupRecord.objects.filter(backup_type="automatic").order_by("-id").first()
        assert backup_b.status == "completed" and backup_b.created_by is None
        assert Bitacora.objects.filter(action="backup.create", target_id=str(backup_b.pk)).exists()
    call_command("list_backups", "--tenant", "clinica-b")
    assert backup_b.file_name in capsys.readouterr().out
    output = tmp_path / "descargado.sql.gz"
    call_command("download_backup", "--tenant", "test_b", "--id", str(backup_b.pk), "-o", str(output))
    assert output.stat().st_size == backup_b.file_size
    call_command("verify_backups", "--tenant", "test_b")
    # a flipped byte is found and marked
    stored = backups_dir / backup_b.file_path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(CommandError, match="dañado"):
        call_command("verify_backups", "--tenant", "test_b")
    with schema_context("test_b"):
        assert BackupRecord.objects.get(pk=backup_b.pk).integrity == "mismatch"
    call_command("delete_backup", "--tenant", "test_b", "--id", str(backup_b.pk))
    with schema_context("test_b"):
        assert not BackupRecord.objects.filter(pk=backup_b.pk).exists()


def test_unknown_tenant_and_unknown_id_are_one_clear_line(tenants, backups_dir):
    with pytest.raises(CommandError, match="no existe"):
        call_command("list_backups", "--tenant", "no_existe")
    with pytest.raises(CommandError, match="public"):
        call_command("list_backups", "--tenant", "public")
    with pytest.raises(CommandError, match="Backup no encontrado"):
        call_command("delete_backup", "--tenant", "test_a", "--id", "999999999")


def test_backup_status_names_the_clinics_without_a_recent_completed_backup_and_fails(tenants, backups_dir, capsys):
    # given clinic B backed up just now, and clinic A whose newest completed backup is two days old
    from datetime import timedelta

    from django.utils import timezone
    from django_tenants.utils import schema_context

    call_command("create_backup", "--tenant", "test_b")
    call_command("create_backup", "--tenant", "test_a")
    with schema_context("test_a"):
        BackupRecord.objects.filter(status="completed").update(created_at=timezone.now() - timedelta(days=2))
    # when the alert runs over every clinic with a 26 h window, then it fails naming A and not B
    with pytest.raises(CommandError, match="test_a") as failed:
        call_command("backup_status", "--all-tenants", "--max-age", "26h")
    assert "test_b" not in str(failed.value)
    output = capsys.readouterr().out
    assert "ATRASADA test_a" in output and "ok test_b" in output
    # and a window that B's backup fits passes for B alone
    call_command("backup_status", "--tenant", "test_b", "--max-age", "90m")
    with pytest.raises(CommandError, match="--max-age"):
        call_command("backup_status", "--tenant", "test_b", "--max-age", "mucho")


def test_backup_status_fails_for_a_clinic_whose_latest_backup_misses_files(tenants, backups_dir, capsys):
    # given clinic B backed up just now, and its newest backup found missing two of its files
    from django_tenants.utils import schema_context

    call_command("create_backup", "--tenant", "test_b")
    call_command("backup_status", "--tenant", "test_b", "--max-age", "26h")
    with schema_context("test_b"):
        latest = BackupRecord.objects.filter(status="completed").order_by("-created_at", "-id").first()
        BackupRecord.objects.filter(pk=latest.pk).update(warnings=[{"code": "files_missing", "count": 2}])
    # when the alert runs, then it fails naming B, with what the backup lacks
    with pytest.raises(CommandError, match="no guarda todos sus archivos: test_b"):
        call_command("backup_status", "--tenant", "test_b", "--max-age", "26h")
    assert "INCOMPLETO test_b" in capsys.readouterr().out
