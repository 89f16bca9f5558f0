from django.core.management.base import BaseCommand

from crawler.backlog import queue_backlog


class Command(BaseCommand):
    help = "Queue a crawl backlog (crawl_website_task, then process_page_content)."

    def add_arguments(self, parser):
        parser.add_argument("--crawls", type=int, default=15)
        parser.add_argument("--pages", type=int, default=10)

    def handle(self, *args, crawls, pages, **options):
        ids = queue_backlog(crawls, pages)
        self.stdout.write(f"queued {crawls} crawls and {pages} page jobs ({len(ids)} tasks)")
