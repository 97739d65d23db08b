"""SupabaseStorage.listdir over real HTTP (the clinic keys' folder is read so; backups.storage.keys)."""
from __future__ import annotations

from django.core.files.base import ContentFile

from backups.storage import supabase


def test_listdir_gives_the_folders_and_objects_directly_under_a_folder_every_page_of_them(
    supabase_server, supabase_storage, monkeypatch,
):
    # given objects at several depths, more of them than one page holds
    monkeypatch.setattr(supabase, "LIST_PAGE", 2)
    for name in ["c/keys/k1.age", "c/keys/k2.age", "c/keys/k3.age", "c/manual/b.sql.gz.age", "c/files/ab/x.age",
                 "c_other/keys/k9.age", "top.txt"]:
        supabase_storage.save(name, ContentFile(b"x"))
    # then each level lists what is directly under it, by name
    assert supabase_storage.listdir("c/keys") == ([], ["k1.age", "k2.age", "k3.age"])
    assert supabase_storage.listdir("c/keys/") == ([], ["k1.age", "k2.age", "k3.age"])
    assert supabase_storage.listdir("c") == (["files", "keys", "manual"], [])
    assert supabase_storage.listdir("") == (["c", "c_other"], ["top.txt"])
    assert supabase_storage.listdir("c/nada") == ([], [])


def test_listdir_of_a_bucket_not_created_yet_is_empty(supabase_storage):
    assert supabase_storage.listdir("c/keys") == ([], [])
