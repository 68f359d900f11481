"""URLs of the demo site."""

from django.urls import path

from demo_site import views

urlpatterns = [
    path("", views.home),
    path("courses/<slug:course_id>/enroll/", views.enroll),
    path("search/", views.search),
]
