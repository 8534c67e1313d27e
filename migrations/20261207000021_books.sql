-- The books (issue 33): a period's movements and payouts of one account, read by the day they
-- happened (`settle books export`), and what the drift check last found per provider balance.
CREATE INDEX money_movements_by_time ON money_movements (account_id, occurred_at);
CREATE INDEX payouts_by_arrival ON payouts (account_id, arrival_date);
