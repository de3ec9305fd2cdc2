from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        from django.contrib.auth.signals import user_login_failed

        from accounts.signals import count_failed_login

        user_login_failed.connect(count_failed_login, dispatch_uid="accounts.count_failed_login")
