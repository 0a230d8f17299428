"""Grading a whole class: submissions found in a folder or a zip, graded in parallel through an executor,
written per student (atomically, so a batch resumes where it stopped) and summed up in class outputs."""
