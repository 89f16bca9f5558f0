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
