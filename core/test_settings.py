"""Settings for the test suite: the real database and binaries, only faster hashing."""
import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789abcdef0123456789")

from core.settings import *  # noqa: E402,F403

# MD5 makes creating and logging in users several times faster; never in production.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# From the environment too, so that a `manage.py` child of a test sees the test's media folder.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or BASE_DIR / "var" / "test-media")  # noqa: F405
# The admin's CSS and JS straight from the apps, without collectstatic (the browser tests' gunicorn).
WHITENOISE_USE_FINDERS = True
# The SQL backups' structure cache (backups.dump.cached), shared by a test and its manage.py children.
BACKUP_STRUCTURE_CACHE_DIR = Path(os.environ.get("BACKUP_STRUCTURE_CACHE_DIR") or BASE_DIR / "var" / "test-cache" / "backup-structure")  # noqa: F405
# The platform's age identity of the test suite (backups.storage.keys), made once under var/ and
# shared by a test and its manage.py children; backups are written plain unless a test (or the
# environment) turns BACKUP_ENCRYPTION on.
BACKUP_PLATFORM_IDENTITY_FILE = Path(os.environ.get("BACKUP_PLATFORM_IDENTITY_FILE") or BASE_DIR / "var" / "test-keys" / "platform-identity.txt")  # noqa: F405
BACKUP_ENCRYPTION = os.environ.get("BACKUP_ENCRYPTION", "off")

from backups.storage.age_format import identity_file_create  # noqa: E402

identity_file_create(BACKUP_PLATFORM_IDENTITY_FILE, "test suite only: the platform's backup identity")
