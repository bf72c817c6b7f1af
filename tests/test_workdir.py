"""retrieval.workdir: the one --force rule of resumable work folders."""

from __future__ import annotations

import pytest

from rankwise.retrieval.errors import InputError
from rankwise.retrieval.workdir import claim_workdir


def test_same_settings_resume_other_settings_need_force(tmp_path):
    work = tmp_path / "job.work"
    assert claim_workdir(work, {"seed": 1, "k": 2}, force=False, what="a job") is False
    (work / "part-0").write_text("done", encoding="utf-8")
    assert claim_workdir(work, {"seed": 1, "k": 2}, force=False, what="a job") is True
    with pytest.raises(InputError, match=r"holds a job with other settings \(seed differ\); pass --force") as err:
        claim_workdir(work, {"seed": 2, "k": 2}, force=False, what="a job")
    assert err.value.path == str(work) and (work / "part-0").is_file()
    assert claim_workdir(work, {"seed": 2, "k": 2}, force=True, what="a job") is False
    assert not (work / "part-0").exists()


def test_nothing_finished_starts_over_and_a_foreign_folder_is_refused(tmp_path):
    work = tmp_path / "w"
    claim_workdir(work, {"a": 1}, force=False, what="a job", has_work=lambda: False)
    assert claim_workdir(work, {"a": 2}, force=False, what="a job", has_work=lambda: False) is False
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="without a readable settings.json"):
        claim_workdir(foreign, {"a": 1}, force=False, what="a job")
    assert (foreign / "notes.txt").is_file()
