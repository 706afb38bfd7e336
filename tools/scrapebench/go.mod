module pyrite/tools/scrapebench

go 1.19
