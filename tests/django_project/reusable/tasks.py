"""A reusable app's task: it knows no project app, so @shared_task."""

from jobqueue import shared_task


@shared_task
def shout(text: str) -> str:
    return text.upper() + "!"
