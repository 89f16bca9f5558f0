import time

from celery import shared_task

from core.timing import scaled


@shared_task
def crawl_website_task(url):
    """Crawls a tenant's website for the knowledge base (about 10 s each)."""
    time.sleep(scaled(10))
    return {"url": url}


@shared_task
def process_page_content(page_id):
    """Chunks and embeds one crawled page (about 5 s each)."""
    time.sleep(scaled(5))
    return {"page_id": page_id}


@shared_task
def render_page(megabytes):
    """Renders a page that takes this much memory (a huge page, a leaking parser): what makes the
    kernel kill a worker process when its pool's memory limit is too low."""
    page = bytearray(int(megabytes) * 1024 * 1024)
    return len(page)
