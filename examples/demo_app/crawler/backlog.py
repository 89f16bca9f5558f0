from crawler.tasks import crawl_website_task, process_page_content


def queue_backlog(crawls, pages):
    """Queue the runbook's crawl backlog: crawls first, then page jobs."""
    ids = [crawl_website_task.delay(f"https://tenant-{n}.example/").id for n in range(crawls)]
    ids += [process_page_content.delay(n).id for n in range(pages)]
    return ids
